"""A real multi-node Ray cluster on this machine, secured like the cloud one.

`up()` starts:
  * an MLflow tracking server (basic-auth, runyard.tracking.server.serve), SQLite by default;
  * a Ray head node (`ray start --head`) with the dashboard / Jobs API;
  * N Ray worker nodes (`ray start --address`), with custom resources standing in for node
    types (default {"gpu_node": 1}: a trial that asks for `custom: {gpu_node: 1}` lands on a
    worker, as it would land on a GPU node);
and turns Ray token authentication on everywhere (RAY_AUTH_MODE=token). The token is generated
here, kept 0600 in <state_dir>/auth_token and handed to Ray by path (RAY_AUTH_TOKEN_PATH); it is
never printed or logged. Jobs inherit MLFLOW_TRACKING_URI/USERNAME/PASSWORD and
RUNYARD_STORAGE from the nodes' environment, so a driver logs to the cluster's tracking server
and keeps its state in the cluster's storage without either in its runtime_env.

What a node is belongs to a backend (runyard.launch.nodes.NodeBackend); this module is the one
up/down sequence over any of them:
  * `up(workers=2)`: process groups of this machine, on 127.0.0.1 and free ports
    (runyard.launch.process_nodes); storage: the project's .runyard/, this machine's disk;
  * `up(hosts=3)` (root only): the head and two workers each its own host, with its own
    network, mount, UTS and PID namespaces and runyard installed from a wheel
    (runyard.launch.netns_hosts); storage: a folder every host mounts at the same path;
  * `up(hosts=2, slurm=True)` (root only): no Ray, a Slurm cluster instead: slurmctld and
    munged on this machine, a slurmd on each of two such hosts (runyard.launch.slurm_hosts);
    each Slurm job starts its own Ray.

Everything started is recorded in <state_dir>/state.json, written after each step so a failed
`up()` can still be undone. `down()` stops exactly that: each node and the mlflow server lead
a process group of their own, and every process started here (including Ray workers that
re-parent) carries RUNYARD_LOCAL_CLUSTER=<id> in its environment; `down` stops the nodes, then
the tracking server, then any process still carrying the marker, and removes what the backend
made. It never runs `ray stop`, which would kill other people's Ray on a shared machine. The
logs and the storage stay.

    cluster = up(workers=2)
    cluster.jobs_address     # http://127.0.0.1:PORT -> runyard.launch.jobs_api
    cluster.tracking_uri     # http://127.0.0.1:PORT (basic-auth)
    down(cluster.state_dir)
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from runyard.errors import UserError
from runyard.launch import netns_hosts, slurm_hosts
from runyard.launch.netns_hosts import HostNetwork, NamespacedHosts
from runyard.launch.nodes import NodeBackend, NodeRecord, NodeSize
from runyard.launch.process_nodes import ProcessNodes
from runyard.launch.slurm_hosts import SlurmHosts
from runyard.paths import CLUSTER_STATE_DIR, project_storage
from runyard.processes import group_alive, kill_all, processes_with_env, stop_group, tail, write_private
from runyard.tracking.server import free_port, serve

DEFAULT_STATE_DIR = CLUSTER_STATE_DIR
STATE_FILE = "state.json"
TOKEN_FILE = "auth_token"
TRACKING_PASSWORD_FILE = "tracking_password"
MARKER_ENV = "RUNYARD_LOCAL_CLUSTER"
DEFAULT_WORKER_RESOURCES = {"gpu_node": 1}
BACKENDS: dict[str, type] = {backend.kind: backend for backend in (ProcessNodes, NamespacedHosts, SlurmHosts)}


@dataclass
class LocalCluster:
    """What `up()` started; also the content of state.json."""

    cluster_id: str
    state_dir: str
    ray_temp_root: str
    token_path: str
    jobs_address: str = ""
    gcs_address: str = ""
    tracking_uri: str = ""
    tracking_username: str = ""
    tracking_password_path: str = ""
    tracking_pid: int = 0
    nodes: list[NodeRecord] = field(default_factory=list)
    # Where its jobs keep their ledgers, Tune state and checkpoints (RUNYARD_STORAGE on every
    # node); kept by `down`, so a job is read back and resumed on the next cluster.
    storage_dir: str = ""
    backend: str = ProcessNodes.kind  # which NodeBackend started the nodes
    network: HostNetwork | None = None  # namespaced hosts only: their bridge

    @property
    def prometheus_service_discovery(self) -> str:
        """Ray's file listing every node's metrics endpoint (Prometheus file_sd_configs)."""
        return os.path.join(self.nodes[0].temp_dir, "prom_metrics_service_discovery.json")

    def node(self, name: str) -> NodeRecord:
        for node in self.nodes:
            if node.name == name:
                return node
        raise UserError(f"{name!r}: no such node; this cluster has {[n.name for n in self.nodes]}")

    def node_env(self) -> dict[str, str]:
        """Environment of every process started for this cluster (never printed: it holds the
        tracking password)."""
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
        }
        env.update(
            # Job entrypoints (`python ...`, `runyard run ...`) resolve to this interpreter's env.
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            RAY_AUTH_TOKEN_PATH=self.token_path,
            **self.cluster_env(),
        )
        return env

    def cluster_env(self) -> dict[str, str]:
        """What every node process of this cluster knows about it, on one machine or on its
        own host: token auth, its marker, and its tracking server's client settings."""
        # Jobs keep their state in the cluster's storage (runyard.execute.storage reads
        # RUNYARD_STORAGE), as a real cluster's nodes name their NFS path or bucket.
        storage = {"RUNYARD_STORAGE": self.storage_dir} if self.storage_dir else {}
        return {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                "MLFLOW_DISABLE_TELEMETRY": "true", MARKER_ENV: self.cluster_id,
                **storage, **self.tracking_env()}

    def tracking_env(self) -> dict[str, str]:
        """MLflow's client settings for this cluster's tracking server, password included
        (never printed); empty when it has none."""
        if not self.tracking_uri:
            return {}
        return {"MLFLOW_TRACKING_URI": self.tracking_uri,
                "MLFLOW_TRACKING_USERNAME": self.tracking_username,
                "MLFLOW_TRACKING_PASSWORD": Path(self.tracking_password_path).read_text().strip()}

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | Path) -> "LocalCluster":
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            raise UserError(
                f"{path}: no local cluster recorded here. Start one with `runyard cluster local up`."
            )
        data = json.loads(path.read_text())
        # A state.json from before backends were recorded: a network means hosts.
        data.setdefault("backend", NamespacedHosts.kind if data.get("network") else ProcessNodes.kind)
        record = BACKENDS[data["backend"]].record
        data["nodes"] = [record(**node) for node in data.get("nodes", [])]
        if data.get("network"):
            data["network"] = HostNetwork(**data["network"])
        return cls(**data)


def up(
    workers: int | None = None,
    resources: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    *,
    hosts: int | None = None,
    head_cpus: int | None = None,
    worker_cpus: int = 1,
    tracking_backend: str | None = None,
    with_tracking: bool = True,
    storage_dir: str | Path | None = None,
    hosts_root: str | Path = netns_hosts.DEFAULT_HOSTS_ROOT,
    slurm: bool = False,
    startup_timeout_s: float = 180.0,
    echo: Callable[[str], None] = print,
) -> LocalCluster:
    """Start the cluster; return its addresses once every node has joined.

    workers: worker nodes besides the head, as processes of this machine (default 2).
    hosts: instead, run N hosts in all -- the head and N-1 workers -- each in its own
        namespaces (root only; see runyard.launch.netns_hosts). Give workers or hosts, not both.
    resources: custom resources per worker node, one dict for all of them or a list with one
        dict per worker (default {"gpu_node": 1} on each worker). The head carries none, so
        work that asks for a custom resource runs on the workers.
    head_cpus: logical CPUs of the head (default 2; 0 with hosts, as cluster.yaml's head, so
        every trial runs on a worker host as it does on the cloud cluster).
    tracking_backend: an MLflow backend URI (postgresql://...); default SQLite in state_dir.
    storage_dir: where the cluster's jobs keep their state, kept by `down` like the logs:
        default the .runyard/ of this working directory for workers (what `runyard best`
        and `resume` read here), <state_dir>/storage for hosts (each host mounts it at the
        same path).
    hosts_root: hosts only; where each host's private /tmp and home live on this side.
    slurm: with hosts, N Slurm hosts n1..nN running a slurmd each, and slurmctld and munged
        on this machine (the login node), instead of Ray nodes; resources and CPUs are this
        machine's own (every host sees its cores).
    MLFLOW_TRACKING_USERNAME/PASSWORD: the tracking admin; when no password is set, a random
        one is generated and kept 0600 in <state_dir>/tracking_password.
    Raises UserError for bad arguments or when a cluster is already recorded in state_dir.
    """
    state_dir = Path(state_dir).resolve()
    if slurm:
        if hosts is None:
            raise UserError("--slurm: give --hosts N, the number of Slurm hosts (e.g. --hosts 2); "
                            "this machine is the login node and runs the controller.")
        if resources is not None or head_cpus is not None or worker_cpus != 1:
            raise UserError("--resources/--head-cpus/--worker-cpus: Ray node options; Slurm hosts "
                            "offer this machine's cores, and each job asks Slurm for what it needs.")
    if hosts is not None:
        if workers is not None:
            raise UserError("--hosts and --workers: give one. --hosts N counts every host, the "
                            "head included (--hosts 3 is the head and two workers).")
        if not isinstance(hosts, int) or isinstance(hosts, bool) or not 1 <= hosts <= netns_hosts.MAX_WORKER_HOSTS + 1:
            raise UserError(f"--hosts: {hosts!r}; expected a whole number from 1 to "
                            f"{netns_hosts.MAX_WORKER_HOSTS + 1} (the head and N-1 workers, e.g. --hosts 3).")
        netns_hosts.check_can_make_hosts()
        if slurm:
            slurm_hosts.check_can_make_slurm()
        # A Slurm cluster's controller runs on this machine: all N hosts are compute nodes.
        workers = hosts if slurm else hosts - 1
        if head_cpus is None:
            head_cpus = 0 if workers else 1
    elif Path(hosts_root) != netns_hosts.DEFAULT_HOSTS_ROOT:
        raise UserError("--hosts-root: only namespaced hosts (--hosts N) have folders of their own.")
    workers = 2 if workers is None else workers
    head_cpus = 2 if head_cpus is None else head_cpus
    worker_resources = _check_up_arguments(workers, resources, head_cpus, worker_cpus,
                                           head_may_be_empty=hosts is not None and workers > 0)
    if (state_dir / STATE_FILE).exists():
        raise UserError(
            f"{state_dir / STATE_FILE}: a local cluster is already recorded here. Stop it with "
            "`runyard cluster local down` (or use another --state-dir)."
        )
    if hosts is not None:
        backend: NodeBackend = (SlurmHosts if slurm else NamespacedHosts)(Path(hosts_root))
        netns_hosts.check_hosts_root(backend.hosts_root, netns_hosts.hidden_checkouts())
        storage = Path(storage_dir or state_dir / "storage").resolve()
    else:
        backend = ProcessNodes()
        storage = Path(storage_dir).resolve() if storage_dir else project_storage(Path.cwd())
    sizes = [NodeSize(head_cpus, {"head_node": 1}), *(NodeSize(worker_cpus, r) for r in worker_resources)]
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    storage.mkdir(parents=True, exist_ok=True)
    cluster_id = secrets.token_hex(6)
    cluster = LocalCluster(
        cluster_id=cluster_id,
        state_dir=str(state_dir),
        ray_temp_root=backend.temp_root(cluster_id),
        token_path=str(write_private(state_dir / TOKEN_FILE, secrets.token_hex(32))),
        storage_dir=str(storage),
        backend=backend.kind,
    )
    cluster.save()
    try:
        backend.prepare(cluster, sizes)
        if with_tracking:
            _start_tracking(cluster, tracking_backend, backend.tracking_host(cluster))
        for size in sizes:
            node = backend.start_node(cluster, size)
            if backend.ray_nodes and node is cluster.nodes[0]:
                _wait_for_jobs_api(cluster, node, startup_timeout_s)
        if backend.ray_nodes:
            _wait_for_nodes(cluster, len(sizes), startup_timeout_s)
        else:
            backend.wait_for_nodes(cluster, startup_timeout_s)
    except BaseException:
        echo("local cluster: start failed, stopping what was started")
        _down(cluster, backend)
        raise
    for line in backend.describe(cluster):
        echo(line)
    if backend.ray_nodes:
        echo(f"  Jobs API / dashboard: {cluster.jobs_address}")
    if cluster.tracking_uri:
        echo(f"  MLflow tracking URI:  {cluster.tracking_uri} (basic-auth, user {cluster.tracking_username})")
    echo(f"  storage:              {cluster.storage_dir} (jobs' ledgers and checkpoints; kept by down)")
    if backend.ray_nodes:
        # Ray's own CLI (ray job list | status | logs) needs the mode as well as the token.
        echo(f"  Ray token: {cluster.token_path} (export RAY_AUTH_MODE=token "
             f"RAY_AUTH_TOKEN_PATH={cluster.token_path})")
    echo(f"  stop with: runyard cluster local down --state-dir {state_dir}")
    return cluster


def down(state_dir: str | Path | LocalCluster = DEFAULT_STATE_DIR, *,
         echo: Callable[[str], None] = print) -> int:
    """Stop everything `up()` recorded in state_dir; return how many processes were ended.

    Workers first, then the head, then the tracking server; then any straggler that still carries
    this cluster's marker; then what the backend made (Ray's temp dirs; the hosts' namespaces,
    veths and bridge) and state.json. Logs and storage stay.
    Given the LocalCluster that up() returned instead, it needs no state.json (a test whose
    temp folder was cleaned away still stops its cluster).
    """
    cluster = state_dir if isinstance(state_dir, LocalCluster) else LocalCluster.load(state_dir)
    ended, removed = _down(cluster, backend_of(cluster))
    echo(f"local cluster down: {ended} processes stopped{removed}")
    return ended


def _down(cluster: LocalCluster, backend: NodeBackend) -> tuple[int, str]:
    """down()'s sequence, also what a failed up() runs; returns (processes ended, what else
    was removed)."""
    ended = sum(backend.stop_node(cluster, node) for node in reversed(cluster.nodes))
    if cluster.tracking_pid:
        ended += stop_group(cluster.tracking_pid, grace_s=15)
    # A Ray worker that left its node's process group still carries the marker.
    ended += kill_all(processes_with_env(MARKER_ENV, cluster.cluster_id))
    removed = backend.remove(cluster)
    (Path(cluster.state_dir) / STATE_FILE).unlink(missing_ok=True)
    return ended, removed


def backend_of(cluster: LocalCluster) -> NodeBackend:
    """The backend that started the cluster's nodes (to stop them, or start one more)."""
    return BACKENDS[cluster.backend]()


def _check_up_arguments(workers, resources, head_cpus, worker_cpus, head_may_be_empty=False) -> list[dict]:
    if not isinstance(workers, int) or workers < 0:
        raise UserError(f"--workers: {workers!r}; expected a whole number >= 0 (e.g. --workers 2).")
    if worker_cpus < 1 or head_cpus < (0 if head_may_be_empty else 1):
        raise UserError("--head-cpus/--worker-cpus: each node needs at least 1 logical CPU (the "
                        "head of a cluster of hosts may have 0, when it has workers).")
    if resources is None:
        per_worker = [dict(DEFAULT_WORKER_RESOURCES) for _ in range(workers)]
    elif isinstance(resources, Mapping):
        per_worker = [dict(resources) for _ in range(workers)]
    elif isinstance(resources, Sequence) and not isinstance(resources, str):
        per_worker = [dict(r) for r in resources]
        if len(per_worker) != workers:
            raise UserError(
                f"--resources: {len(per_worker)} dicts for {workers} workers; give one dict for "
                'all workers ({"gpu_node": 1}) or one per worker.'
            )
    else:
        raise UserError(f'--resources: {resources!r}; expected a JSON object like {{"gpu_node": 1}}.')
    for node_resources in per_worker:
        for name, amount in node_resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise UserError(
                    f"--resources: {name!r} is a built-in resource; use a custom name such as "
                    '"gpu_node" (GPUs cannot be faked on a CPU machine).'
                )
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
                raise UserError(f"--resources: {name}={amount!r}; amounts must be positive numbers.")
    return per_worker


def _start_tracking(cluster: LocalCluster, backend: str | None, host: str) -> None:
    """The basic-auth MLflow server; `host` is the bridge's root-side address for namespaced
    hosts (they reach it there, and so does this machine)."""
    state_dir = Path(cluster.state_dir)
    tracking_dir = state_dir / "tracking"
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or "admin"
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    password_path = state_dir / TRACKING_PASSWORD_FILE
    if not password:
        password = password_path.read_text().strip() if password_path.exists() else secrets.token_urlsafe(24)
    write_private(password_path, password)
    cluster.tracking_username = username
    cluster.tracking_password_path = str(password_path)
    # The same port as the last cluster of this state dir, when it is free: a job's ledger
    # names its tracking URI, so `best` and `resume` of a job from an earlier cluster find
    # its runs on this one (the store itself stays in state_dir across `down`).
    port_path = tracking_dir / "port"
    port = _port_if_free(host, int(port_path.read_text())) if port_path.exists() else 0
    port = port or free_port(host)
    tracking_dir.mkdir(parents=True, exist_ok=True)
    port_path.write_text(str(port))
    server = serve(
        backend or f"sqlite:///{tracking_dir / 'mlflow.db'}",
        str(tracking_dir / "artifacts"),
        state_dir=tracking_dir,
        host=host,
        port=port,
        username=username,
        password=password,
        # MLflow matches the Host header exactly, port included.
        allowed_hosts=[] if host == "127.0.0.1" else [f"{host}:{port}"],
        extra_env={MARKER_ENV: cluster.cluster_id},
    )
    cluster.tracking_pid = server.pid
    cluster.tracking_uri = server.uri
    cluster.save()


def _port_if_free(host: str, port: int) -> int:
    """`port` if it can be bound on `host` now, else 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server binds it: a port whose old connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return 0
    return port


def _wait_for_jobs_api(cluster: LocalCluster, head: NodeRecord, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(head.pid):
            raise RuntimeError(f"the Ray head exited during start; see {head.log}:\n{tail(Path(head.log))}")
        try:
            _get_json(cluster, "/api/jobs/")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(1)
    raise RuntimeError(f"the Ray Jobs API did not answer within {timeout_s:.0f} s; see {head.log}")


def _wait_for_nodes(cluster: LocalCluster, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not group_alive(node.pid):
                raise RuntimeError(f"Ray node {node.name} exited during start; see {node.log}:\n{tail(Path(node.log))}")
        try:
            alive = count_alive_nodes(cluster)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            alive = 0
        if alive >= expected:
            return
        time.sleep(1)
    raise RuntimeError(f"{alive} of {expected} Ray nodes joined within {timeout_s:.0f} s; see {cluster.state_dir}/logs")


def count_alive_nodes(cluster: LocalCluster) -> int:
    """Alive nodes as the GCS sees them (dashboard state API, authenticated); on a Slurm
    cluster, the controller if it answers and the hosts Slurm can use."""
    backend = backend_of(cluster)
    if not backend.ray_nodes:
        return backend.count_serving(cluster)
    return len(alive_node_ids(cluster))


def alive_node_ids(cluster: LocalCluster) -> set[str]:
    """Ray node ids of the nodes the GCS sees alive."""
    answer = _get_json(cluster, "/api/v0/nodes?limit=100&detail=false")
    return {row["node_id"] for row in answer["data"]["result"]["result"] if row.get("state") == "ALIVE"}


def _get_json(cluster: LocalCluster, path: str):
    token = Path(cluster.token_path).read_text().strip()
    request = urllib.request.Request(cluster.jobs_address + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
