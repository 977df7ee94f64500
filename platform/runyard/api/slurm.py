"""Jobs on a Slurm cluster, from its login node: `submit` plans the job here and hands Slurm
one batch script (runyard.launch.slurm) that starts the job's own Ray on its nodes and runs
the driver there; `find`, `job_status` and `stop` serve `runyard status | logs | stop JOB` for it.

    from runyard.api import slurm
    submitted = slurm.submit("jobs/sweep.yaml", options=SlurmOptions(nodes=2), storage="/scratch/me/runyard")
    slurm.job_status(slurm.find(submitted.job_id, "/scratch/me/runyard")).state
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from runyard.errors import UserError
from runyard.execute.storage import ENV as STORAGE_ENV
from runyard.execute.storage import Storage
from runyard.launch.slurm import ACTIVE_STATES, SlurmOptions


@dataclass(frozen=True)
class SlurmSubmission:
    job_id: str  # runyard's job id (its ledger, its MLflow runs)
    name: str
    slurm_job_id: str
    trials: int
    folder: Path  # the job's snapshot, token, batch script and Slurm output, in the storage
    shipped: str

    @property
    def job(self) -> SlurmJob:
        return SlurmJob(self.job_id, self.slurm_job_id, self.folder)


def submit(spec: str | Path, overrides: Sequence[str] = (), *, options: SlurmOptions,
           job_id: str | None = None, tracking_uri: str | None = None, storage: str | None = None,
           max_upload_mb: float = 100.0) -> SlurmSubmission:
    """Validate and plan the spec here, snapshot the project and this runyard into the job's
    folder in `storage` (a path every node mounts), and sbatch the job. The tracking URI and
    its credentials reach the job through the environment sbatch exports."""
    import runyard
    from runyard.api.jobs import in_project, validate
    from runyard.api.requests import RunRequest
    from runyard.execute.planned import new_job_id
    from runyard.launch import project_files, slurm
    from runyard.plan import check_feasible

    options.check()
    storage = storage or os.environ.get(STORAGE_ENV)
    if not storage or "://" in storage:
        raise UserError("--storage: a Slurm job keeps its code, state and checkpoints in a folder "
                        "every node mounts at the same path (NFS home, scratch); give --storage "
                        "/shared/path or set RUNYARD_STORAGE.")
    storage = str(Path(storage).resolve())
    planned = validate(spec, overrides)
    nodes = options.ray_nodes()
    if nodes is not None:  # refused here, not after the allocation has waited in the queue
        check_feasible(planned.spec, planned.trials, nodes,
                       remedy=f"or ask Slurm for more per node (now --nodes {options.nodes} "
                              f"--cpus-per-node {options.cpus_per_node} --gpus-per-node "
                              f"{options.gpus_per_node or 0})")
    project = Path.cwd().resolve()
    relative = in_project(spec, project)
    shipment = project_files.shipment(project)
    project_files.check_size(shipment, max_upload_mb)
    job_id = job_id or new_job_id(planned.spec)
    start = RunRequest(str(relative), tuple(overrides), job_id=job_id, tracking_uri=tracking_uri,
                       storage=storage)
    folder = slurm.job_dir(storage, job_id)
    slurm.stage(folder, project, sorted(shipment.files), Path(runyard.__file__).parent)
    script = slurm.batch_script(folder, planned.spec.name, _driver(start.argv(), job_id, storage), options)
    slurm_job_id = slurm.submit(folder, script)
    return SlurmSubmission(job_id, planned.spec.name, slurm_job_id, len(planned.trials), folder,
                           shipment.summary())


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    slurm_job_id: str
    folder: Path

    @property
    def output(self) -> Path:
        return self.folder / f"slurm-{self.slurm_job_id}.out"


@dataclass(frozen=True)
class SlurmJobStatus:
    job: SlurmJob
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT...; "-" once Slurm forgot it
    nodes: str  # Slurm's node list, n[1-2]
    elapsed: str
    limit: str
    restarts: str  # how often Slurm requeued it (after its wall-time stop, a node failure)


def resume(job_id: str, *, options: SlurmOptions, storage: str | None = None) -> SlurmJob:
    """Continue a job submitted with --slurm in a new allocation: the same snapshot, a driver
    that resumes it from its storage, in the same MLflow runs."""
    from runyard.launch import slurm

    options.check()
    job = find(job_id, storage)
    if job is None:
        raise UserError(f"{job_id}: no Slurm job of that id in --storage (or RUNYARD_STORAGE)'s "
                        f"{slurm.JOBS_FOLDER}/; give the storage it was submitted with.")
    state = job_status(job).state
    if state in ACTIVE_STATES:
        raise UserError(f"{job_id}: Slurm job {job.slurm_job_id} is still {state}; stop it first "
                        f"(runyard stop {job_id}).")
    storage = str(job.folder.parents[1])
    script = slurm.batch_script(job.folder, job_id, _driver(None, job_id, storage), options)
    return SlurmJob(job_id, slurm.submit(job.folder, script, keep_folder=True), job.folder)


def _driver(start: list[str] | None, job_id: str, storage: str):
    """The batch script's driver: `start` (runyard's arguments) in the job's first allocation,
    `resume` once the job has a ledger (start None: it has one already)."""
    from runyard.api.requests import ContinueRequest
    from runyard.launch.slurm import Driver

    runyard = ["python", "-m", "runyard.cli.main"]
    resume = [*runyard, *ContinueRequest(job_id, "resume", storage=storage).argv()]
    return Driver(start=[*runyard, *start] if start else resume, resume=resume,
                  ledger=Storage(storage).ledger_path(job_id))


def find(job_id: str, storage: str | None = None) -> SlurmJob | None:
    """The Slurm job runyard submitted as `job_id` with this storage (--storage, else
    RUNYARD_STORAGE); None when it has no folder there (then it is not a Slurm job)."""
    from runyard.launch import slurm

    storage = storage or os.environ.get(STORAGE_ENV)
    if not storage or "://" in storage:
        return None
    folder = slurm.job_dir(storage, job_id)
    recorded = folder / "slurm_job_id"
    if not recorded.is_file():
        return None
    return SlurmJob(job_id, recorded.read_text().strip(), folder)


def job_status(job: SlurmJob) -> SlurmJobStatus:
    """Slurm's view of the job, while Slurm still lists it."""
    from runyard.launch import slurm

    fields = slurm.job_fields(job.slurm_job_id)
    return SlurmJobStatus(job, fields.get("JobState", "-"), fields.get("NodeList", "-"),
                          fields.get("RunTime", "-"), fields.get("TimeLimit", "-"), fields.get("Restarts", "-"))


def stop(job: SlurmJob) -> bool:
    """A graceful stop: SIGTERM to the batch script alone, which hands it to the driver; the
    driver ends its runs KILLED (resumable) while the job's Ray still serves it, then the
    script stops that Ray. A job still waiting in the queue is just cancelled. False when
    Slurm no longer runs the job."""
    from runyard.launch import slurm

    state = job_status(job).state
    if state not in ACTIVE_STATES:
        return False
    slurm.cancel(job.slurm_job_id, graceful=state == "RUNNING")
    return True
