"""A real multi-node Ray cluster on this machine, secured like the cloud one.

`up()` starts, all bound to 127.0.0.1 and on free ports:
  * an MLflow tracking server (basic-auth, runyard.tracking.server.serve), SQLite by default;
  * a Ray head node (`ray start --head`) with the dashboard / Jobs API;
  * N Ray worker nodes (`ray start --address`), each with its own temp dir and ports, and custom
    resources standing in for node types (default {"gpu_node": 1}: a trial that asks for
    `custom: {gpu_node: 1}` lands on a worker, as it would land on a GPU node);
and turns Ray token authentication on everywhere (RAY_AUTH_MODE=token). The token is generated
here, kept 0600 in <state_dir>/auth_token and handed to Ray by path (RAY_AUTH_TOKEN_PATH); it is
never printed or logged. Jobs inherit MLFLOW_TRACKING_URI/USERNAME/PASSWORD from the nodes'
environment, so a driver logs to the cluster's tracking server without secrets in its runtime_env.

Everything started is recorded in <state_dir>/state.json, written after each step so a failed
`up()` can still be undone. `down()` stops exactly that: each `ray start --block` / mlflow
process was started as the leader of its own process group, and every process started here
(including Ray workers that re-parent) carries RUNYARD_LOCAL_CLUSTER=<id> in its environment;
`down` ends those groups and then any process still carrying the marker. It never runs
`ray stop`, which would kill other people's Ray on a shared machine.

    cluster = up(workers=2)
    cluster.jobs_address     # http://127.0.0.1:PORT -> runyard.launch.jobs_api
    cluster.tracking_uri     # http://127.0.0.1:PORT (basic-auth)
    down(cluster.state_dir)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from runyard.errors import UserError
from runyard.tracking.server import (
    processes_in_group,
    serve,
    tail,
    terminate_process_group,
    write_private,
)

DEFAULT_STATE_DIR = Path(".runyard/cluster")
STATE_FILE = "state.json"
TOKEN_FILE = "auth_token"
TRACKING_PASSWORD_FILE = "tracking_password"
MARKER_ENV = "RUNYARD_LOCAL_CLUSTER"
DEFAULT_WORKER_RESOURCES = {"gpu_node": 1}
# Ports handed to each node's worker processes (--worker-port-list); Ray needs one per live
# worker (prestarted workers, actors, the job driver and its supervisor).
WORKER_PORTS_PER_NODE = 32
# metrics, agent http, agent grpc, runtime env agent, node manager, object manager + workers.
NODE_PORTS = 6 + WORKER_PORTS_PER_NODE
# The object store is shared memory; the default (30% of RAM per node) is far too much for
# three nodes on a shared 2-core development box.
OBJECT_STORE_BYTES = 150 * 1024 * 1024
RAY_BIN = str(Path(sys.executable).with_name("ray"))


@dataclass
class NodeRecord:
    name: str
    pid: int  # leader of the node's process group (`ray start --block`)
    num_cpus: int
    resources: dict
    temp_dir: str
    log: str
    metrics_port: int


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

    @property
    def prometheus_service_discovery(self) -> str:
        """Ray's file listing every node's metrics endpoint (Prometheus file_sd_configs)."""
        return os.path.join(self.ray_temp_root, "head", "prom_metrics_service_discovery.json")

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
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=self.token_path,
            RAY_USAGE_STATS_ENABLED="0",
            MLFLOW_DISABLE_TELEMETRY="true",
            **{MARKER_ENV: self.cluster_id},
        )
        if self.tracking_uri:
            env.update(
                MLFLOW_TRACKING_URI=self.tracking_uri,
                MLFLOW_TRACKING_USERNAME=self.tracking_username,
                MLFLOW_TRACKING_PASSWORD=Path(self.tracking_password_path).read_text().strip(),
            )
        return env

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
        data["nodes"] = [NodeRecord(**node) for node in data.get("nodes", [])]
        return cls(**data)


def up(
    workers: int = 2,
    resources: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    *,
    head_cpus: int = 2,
    worker_cpus: int = 1,
    tracking_backend: str | None = None,
    with_tracking: bool = True,
    startup_timeout_s: float = 180.0,
    echo: Callable[[str], None] = print,
) -> LocalCluster:
    """Start the cluster; return its addresses once every node has joined.

    resources: custom resources per worker node, one dict for all of them or a list with one
        dict per worker (default {"gpu_node": 1} on each worker). The head carries none, so
        work that asks for a custom resource runs on the workers.
    tracking_backend: an MLflow backend URI (postgresql://...); default SQLite in state_dir.
    MLFLOW_TRACKING_USERNAME/PASSWORD: the tracking admin; when no password is set, a random
        one is generated and kept 0600 in <state_dir>/tracking_password.
    Raises UserError for bad arguments or when a cluster is already recorded in state_dir.
    """
    worker_resources = _check_up_arguments(workers, resources, head_cpus, worker_cpus)
    state_dir = Path(state_dir).resolve()
    if (state_dir / STATE_FILE).exists():
        raise UserError(
            f"{state_dir / STATE_FILE}: a local cluster is already recorded here. Stop it with "
            "`runyard cluster local down` (or use another --state-dir)."
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)

    cluster = LocalCluster(
        cluster_id=secrets.token_hex(6),
        state_dir=str(state_dir),
        # Short on purpose: Ray puts unix sockets under it (107-byte path limit).
        ray_temp_root=tempfile.mkdtemp(prefix="ry-", dir="/tmp"),
        token_path=str(write_private(state_dir / TOKEN_FILE, secrets.token_hex(32))),
    )
    cluster.save()
    try:
        if with_tracking:
            _start_tracking(cluster, tracking_backend, echo)
        _start_head(cluster, head_cpus, startup_timeout_s, echo)
        for index, node_resources in enumerate(worker_resources, start=1):
            _start_worker(cluster, index, worker_cpus, node_resources)
        cluster.save()
        _wait_for_nodes(cluster, 1 + workers, startup_timeout_s)
    except BaseException:
        echo("local cluster: start failed, stopping what was started")
        down(state_dir, echo=lambda _: None)
        raise
    echo(f"local cluster up: {1 + workers} Ray nodes (head + {workers} workers), token auth on")
    echo(f"  Jobs API / dashboard: {cluster.jobs_address}")
    if cluster.tracking_uri:
        echo(f"  MLflow tracking URI:  {cluster.tracking_uri} (basic-auth, user {cluster.tracking_username})")
    echo(f"  Ray token: {cluster.token_path} (export RAY_AUTH_TOKEN_PATH={cluster.token_path})")
    echo(f"  stop with: runyard cluster local down --state-dir {state_dir}")
    return cluster


def down(state_dir: str | Path = DEFAULT_STATE_DIR, *, echo: Callable[[str], None] = print) -> int:
    """Stop everything `up()` recorded in state_dir; return how many processes were ended.

    Workers first, then the head, then the tracking server; then any straggler that still carries
    this cluster's marker. Removes the Ray temp dir and state.json (logs stay in state_dir/logs).
    """
    cluster = LocalCluster.load(state_dir)
    ended = 0
    for node in reversed(cluster.nodes):
        ended += len(processes_in_group(node.pid))
        # Raylets exit on SIGTERM at once; `ray start --block`, the GCS and the autoscaler
        # monitor ignore it for 10+ s. Nothing on a local cluster needs a graceful GCS exit.
        terminate_process_group(node.pid, timeout_s=3)
        _reap(node.pid)
    if cluster.tracking_pid:
        ended += len(processes_in_group(cluster.tracking_pid))
        terminate_process_group(cluster.tracking_pid, timeout_s=15)
        _reap(cluster.tracking_pid)
    for pid in processes_with_marker(cluster.cluster_id):
        try:
            os.kill(pid, signal.SIGKILL)
            ended += 1
        except ProcessLookupError:
            pass
    shutil.rmtree(cluster.ray_temp_root, ignore_errors=True)
    (Path(cluster.state_dir) / STATE_FILE).unlink(missing_ok=True)
    echo(f"local cluster down: {ended} processes stopped")
    return ended


def add_worker(cluster: LocalCluster, resources: Mapping[str, float] | None = None, *,
               num_cpus: int = 1, timeout_s: float = 180.0) -> NodeRecord:
    """Start one more worker node (e.g. to replace one that died) and wait until it joined.

    It is recorded in state.json like the others, so `down()` stops it too.
    """
    node_resources = _check_up_arguments(1, None if resources is None else [dict(resources)], 1, num_cpus)[0]
    known = alive_node_ids(cluster)
    _start_worker(cluster, len(cluster.nodes), num_cpus, node_resources)
    node = cluster.nodes[-1]
    deadline = time.monotonic() + timeout_s
    while not alive_node_ids(cluster) - known:
        if not _group_running(node.pid):
            raise RuntimeError(f"Ray node {node.name} exited during start; see {node.log}:\n{tail(Path(node.log))}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray node {node.name} did not join within {timeout_s:.0f} s; see {node.log}")
        time.sleep(1)
    return node


def processes_with_marker(cluster_id: str) -> list[int]:
    """PIDs of live processes whose environment says they belong to this cluster."""
    marker = f"{MARKER_ENV}={cluster_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if marker in environ.split(b"\0") and state[state.rindex(")") + 2] != "Z":
            found.append(int(entry))
    return found


def _check_up_arguments(workers, resources, head_cpus, worker_cpus) -> list[dict]:
    if not isinstance(workers, int) or workers < 0:
        raise UserError(f"--workers: {workers!r}; expected a whole number >= 0 (e.g. --workers 2).")
    if head_cpus < 1 or worker_cpus < 1:
        raise UserError("--num-cpus: each node needs at least 1 logical CPU.")
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


def _start_tracking(cluster: LocalCluster, backend: str | None, echo) -> None:
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
    server = serve(
        backend or f"sqlite:///{tracking_dir / 'mlflow.db'}",
        str(tracking_dir / "artifacts"),
        state_dir=tracking_dir,
        username=username,
        password=password,
        extra_env={MARKER_ENV: cluster.cluster_id},
    )
    cluster.tracking_pid = server.pid
    cluster.tracking_uri = server.uri
    cluster.save()


def _start_head(cluster: LocalCluster, num_cpus: int, timeout_s: float, echo) -> None:
    gcs, dashboard, client, autoscaler_metrics, dashboard_metrics, *node_ports = free_ports(5 + NODE_PORTS)
    temp_dir = os.path.join(cluster.ray_temp_root, "head")
    command = [
        RAY_BIN, "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs),
        "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(client),
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--resources", json.dumps({"head_node": 1}),
        "--temp-dir", temp_dir,
        "--disable-usage-stats",
        *_node_port_flags(node_ports),
    ]
    cluster.gcs_address = f"127.0.0.1:{gcs}"
    cluster.jobs_address = f"http://127.0.0.1:{dashboard}"
    # The autoscaler's and dashboard's own metrics ports are fixed (44217, 44227) unless set
    # through these variables; two clusters on one machine would fight over them.
    ports_env = {"AUTOSCALER_METRIC_PORT": str(autoscaler_metrics), "DASHBOARD_METRIC_PORT": str(dashboard_metrics)}
    node = _launch_node(cluster, "head", command, num_cpus, {"head_node": 1}, temp_dir, node_ports[0], ports_env)
    cluster.save()
    _wait_for_jobs_api(cluster, node, timeout_s)


def _start_worker(cluster: LocalCluster, index: int, num_cpus: int, resources: dict) -> None:
    node_ports = free_ports(NODE_PORTS)
    temp_dir = os.path.join(cluster.ray_temp_root, f"w{index}")
    command = [
        RAY_BIN, "start", "--block",
        "--address", cluster.gcs_address,
        "--node-ip-address", "127.0.0.1",
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--resources", json.dumps(resources),
        "--temp-dir", temp_dir,
        "--disable-usage-stats",
        *_node_port_flags(node_ports),
    ]
    _launch_node(cluster, f"worker-{index}", command, num_cpus, resources, temp_dir, node_ports[0])


def _node_port_flags(ports: list[int]) -> list[str]:
    """Flags for NODE_PORTS distinct free ports; the first is the metrics export port.

    Every port explicit: the defaults (52365 for the agent, 8080 for metrics...) would collide
    between nodes on one machine and with other people's Ray.
    """
    metrics, agent_http, agent_grpc, runtime_env, node_manager, object_manager, *worker_ports = ports
    return [
        "--metrics-export-port", str(metrics),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env),
        "--node-manager-port", str(node_manager),
        "--object-manager-port", str(object_manager),
        "--worker-port-list", ",".join(map(str, worker_ports)),
        "--object-store-memory", str(OBJECT_STORE_BYTES),
    ]


def _launch_node(cluster, name, command, num_cpus, resources, temp_dir, metrics_port, extra_env=None) -> NodeRecord:
    log = Path(cluster.state_dir) / "logs" / f"{name}.out"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, env={**cluster.node_env(), **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=cluster.state_dir,
        )
    node = NodeRecord(name, process.pid, num_cpus, resources, temp_dir, str(log), metrics_port)
    cluster.nodes.append(node)
    cluster.save()
    return node


def _wait_for_jobs_api(cluster: LocalCluster, head: NodeRecord, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_running(head.pid):
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
            if not _group_running(node.pid):
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
    """Alive nodes as the GCS sees them (dashboard state API, authenticated)."""
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


def _group_running(pgid: int) -> bool:
    return any(state != "Z" for _, state in processes_in_group(pgid))


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
