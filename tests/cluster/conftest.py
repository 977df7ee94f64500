"""Fixtures: one real local Ray cluster per session, and throwaway PostgreSQL servers.

`local_ray_cluster` starts a head + 2 workers + the basic-auth MLflow server through runyard's
own `up()`, stops them with `down()` and then checks that no process of theirs is left (about
40-60 s up, 5 s down on 2 shared cores). `postgres` starts a
PostgreSQL server on a free port in a temp dir (initdb + pg_ctl from the Debian package
`postgresql`; as root they run as the `postgres` user) and removes it afterwards.
`namespaced_hosts` starts the head and two workers as hosts that share nothing but a bridge
and a storage folder (`up(hosts=3)`, root only; skipped with the reason elsewhere).
`local_slurm` starts a real Slurm cluster of two such hosts (`cluster local up --hosts 2
--slurm`: slurmctld and munged here, a munged and a slurmd on each host) and checks that `down`
leaves nothing of it behind.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from node_faults import exec_on_host
from runyard_testing import (RUNYARD, leftovers_of, local_slurm_unavailable, namespaced_hosts_unavailable,
                             processes_of)

from runyard.launch import local_cluster, slurm_hosts
from runyard.launch.process_nodes import free_ports
from runyard.processes import group_members


@dataclass
class ClusterUnderTest:
    cluster: local_cluster.LocalCluster
    up_output: str

    @property
    def token(self) -> str:
        return Path(self.cluster.token_path).read_text().strip()

    @property
    def tracking_password(self) -> str:
        return Path(self.cluster.tracking_password_path).read_text().strip()


@pytest.fixture(scope="session")
def local_ray_cluster(tmp_path_factory) -> ClusterUnderTest:
    state_dir = tmp_path_factory.mktemp("cluster")
    printed: list[str] = []
    cluster = local_cluster.up(workers=2, resources={"gpu_node": 1}, state_dir=state_dir,
                               storage_dir=tmp_path_factory.mktemp("storage"), echo=printed.append)
    try:
        yield ClusterUnderTest(cluster, "\n".join(printed))
    finally:
        local_cluster.down(state_dir, echo=lambda _: None)
    # `down` leaves no process behind (checked here, on the full 3-node + MLflow cluster, rather
    # than on a second cluster: a teardown failure fails the run just the same).
    groups = [node.pid for node in cluster.nodes] + [cluster.tracking_pid]
    assert [p for group in groups for p in group_members(group)] == []
    assert processes_of(cluster) == []
    assert not Path(cluster.ray_temp_root).exists()
    assert not (state_dir / local_cluster.STATE_FILE).exists()


@dataclass
class Postgres:
    uri: str
    port: int
    data_dir: Path


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture
def postgres() -> Postgres:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ry-pg-"))
    data_dir, socket_dir = root / "data", root / "sock"
    socket_dir.mkdir()
    password = secrets.token_hex(16)
    password_file = root / "pw"
    password_file.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
        shutil.chown(password_file, "postgres")
    port = free_ports(1)[0]
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data_dir), "-U", "runyard", "-A", "scram-sha-256",
                           f"--pwfile={password_file}", "--no-sync", "-E", "UTF8"]),
        check=True, capture_output=True,
    )
    password_file.unlink()
    server_options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data_dir), "-o", server_options, "-l", str(root / "server.log"), "-w", "start"]),
        check=True, capture_output=True,
    )
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=port, user="runyard", password=password, dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE mlflow")
        admin.close()
        yield Postgres(uri=f"postgresql://runyard:{password}@127.0.0.1:{port}/mlflow", port=port, data_dir=data_dir)
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class HostsUnderTest(ClusterUnderTest):
    """A cluster of namespaced hosts: the head and two workers (`up(hosts=3)`), each with its
    own network, mount, UTS and PID namespaces; `storage` is mounted at the same path in all."""

    @property
    def storage(self) -> Path:
        return Path(self.cluster.storage_dir)

    def on_host(self, name: str, *command: str) -> subprocess.CompletedProcess:
        return exec_on_host(self.cluster, name, list(command))


@pytest.fixture(scope="session")
def namespaced_hosts(tmp_path_factory) -> HostsUnderTest:
    """The head and two worker hosts (1 CPU and {"gpu_node": 1} each; the head has 0 CPUs, as
    on the cloud cluster), MLflow on the bridge, a storage folder shared by all. About 60-80 s
    up on 2 shared cores; `down` is checked to leave nothing of it behind."""
    reason = namespaced_hosts_unavailable()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("hosts")
    printed: list[str] = []
    cluster = local_cluster.up(hosts=3, resources={"gpu_node": 1}, state_dir=state_dir,
                               storage_dir=tmp_path_factory.mktemp("storage"), echo=printed.append)
    try:
        yield HostsUnderTest(cluster, "\n".join(printed))
    finally:
        local_cluster.down(cluster, echo=lambda _: None)
    assert leftovers_of(cluster) == []


@dataclass
class SlurmUnderTest(ClusterUnderTest):
    """A Slurm cluster of two namespaced hosts, n1 and n2; this machine is its login node."""

    @property
    def storage(self) -> Path:
        return Path(self.cluster.storage_dir)

    def slurm(self, *command: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """A Slurm command (srun, sbatch, sinfo...) on the login node, against this cluster."""
        return subprocess.run(list(command), env={**os.environ, **slurm_hosts.slurm_env(self.cluster)},
                              capture_output=True, text=True, timeout=timeout_s, cwd=self.storage)

    def on_host(self, name: str, *command: str) -> subprocess.CompletedProcess:
        """`command` on host `name` itself (not through Slurm, which may have no free core)."""
        return exec_on_host(self.cluster, name, list(command))


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory) -> SlurmUnderTest:
    """`runyard cluster local up --hosts 2 --slurm` and, afterwards, `down`, checked to leave no
    daemon, namespace, mount, link or file of it (about 10-15 s up, 5 s down, on 2 shared
    cores)."""
    reason = local_slurm_unavailable()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([str(RUNYARD), "cluster", "local", "up", "--hosts", "2", "--slurm",
                         "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=300)
    recorded = (state_dir / local_cluster.STATE_FILE).exists()
    cluster = local_cluster.LocalCluster.load(state_dir) if recorded else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield SlurmUnderTest(cluster, up.stdout)
    finally:
        if cluster is not None:
            down = subprocess.run([str(RUNYARD), "cluster", "local", "down", "--state-dir", str(state_dir)],
                                  capture_output=True, text=True, timeout=120)
            if (state_dir / local_cluster.STATE_FILE).exists():
                local_cluster.down(cluster, echo=lambda _: None)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers_of(cluster) == []
    # (The marker aside: no munged or slurmctld still serving this cluster's files.)
    assert [p.pid for p in psutil.process_iter(["cmdline"]) if str(state_dir) in " ".join(p.info["cmdline"] or [])] == []
    # Slurm's configuration, munge key, sockets and state went with it; the logs stay.
    assert not (state_dir / slurm_hosts.SLURM_DIR).exists()
    assert not (state_dir / local_cluster.STATE_FILE).exists()
    assert (state_dir / "logs" / "slurmctld.out").exists()
