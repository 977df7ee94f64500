"""Clusters as Python functions: runyard's own local cluster (up, down, status), the warm
embedded Ray `runyard run` keeps (status, stop), and the jobs
on a Ray cluster's Jobs API (list, one job, its logs, stop). `runyard cluster local ...` and
`runyard status | logs | stop` parse their flags into these calls and render what they
return; a notebook or a test calls them the same way.

    from runyard.api import clusters
    cluster = clusters.local_up(workers=2)
    clusters.jobs(cluster.jobs_address)
    clusters.local_down(cluster.state_dir)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from runyard.paths import CLUSTER_STATE_DIR

if TYPE_CHECKING:
    from ray.job_submission import JobDetails

    from runyard.launch.local_cluster import LocalCluster
    from runyard.launch.warm_ray import WarmRay


@dataclass(frozen=True)
class LocalClusterStatus:
    cluster: LocalCluster
    alive: int | None  # nodes the GCS sees alive; None when the head did not answer
    unreachable: str = ""  # why the head did not answer
    slurm_conf: str = ""  # a Slurm cluster: the SLURM_CONF its commands need

    @property
    def whole(self) -> bool:
        return self.alive == len(self.cluster.nodes)


def local_up(**options: Any) -> LocalCluster:
    """Start a local cluster (runyard.launch.local_cluster.up's options) once every node joined."""
    from runyard.launch import local_cluster

    return local_cluster.up(**options)


def local_down(state_dir: str | Path = CLUSTER_STATE_DIR) -> int:
    """Stop what `local_up` recorded in state_dir; returns how many processes were ended."""
    from runyard.launch import local_cluster

    return local_cluster.down(state_dir)


def local_status(state_dir: str | Path = CLUSTER_STATE_DIR) -> LocalClusterStatus:
    """The recorded cluster and how many of its nodes are alive now."""
    from runyard.launch import local_cluster

    from runyard.launch import slurm_hosts

    cluster = local_cluster.LocalCluster.load(state_dir)
    slurm_conf = slurm_hosts.slurm_env(cluster)["SLURM_CONF"] if cluster.backend == slurm_hosts.SlurmHosts.kind else ""
    try:
        return LocalClusterStatus(cluster, local_cluster.count_alive_nodes(cluster), slurm_conf=slurm_conf)
    except OSError as error:
        return LocalClusterStatus(cluster, None, str(error), slurm_conf=slurm_conf)


def warm_ray() -> WarmRay | None:
    """This user's warm Ray (the embedded Ray that `runyard run` keeps between runs), if
    one is running."""
    from runyard.launch import warm_ray

    return warm_ray.running()


def stop_warm_ray() -> WarmRay | None:
    """Stop this user's warm Ray now; returns it, or None when none was running. Refused
    (UserError) while a run is using it."""
    from runyard.errors import UserError
    from runyard.launch import warm_ray

    try:
        return warm_ray.stop()
    except RuntimeError as busy:
        raise UserError(str(busy)) from None


def jobs(address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> list[JobDetails]:
    """Every job the cluster at `address` knows (default: RAY_ADDRESS, else the local cluster)."""
    from runyard.launch import jobs_api

    return jobs_api.list_jobs(address, state_dir=state_dir)


def job(job_id: str, address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> JobDetails:
    from runyard.launch import jobs_api

    return jobs_api.status(job_id, address, state_dir=state_dir)


def job_logs(job_id: str, address: str | None = None, follow: bool = False,
             state_dir: str | Path = CLUSTER_STATE_DIR) -> Iterator[str]:
    """The job's driver output; with follow, as it comes until the job ends."""
    from runyard.launch import jobs_api

    return jobs_api.logs(job_id, address, follow=follow, state_dir=state_dir)


def stop(job_id: str, address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> bool:
    """Ask the cluster to stop the job (its driver gets SIGTERM); False if it had ended."""
    from runyard.launch import jobs_api

    return jobs_api.stop(job_id, address, state_dir=state_dir)
