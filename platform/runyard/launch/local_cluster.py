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

`up(hosts=3)` (root only) runs the head and two workers each as its own host instead: its own
network, mount, UTS and PID namespaces, runyard installed on it from a wheel, a storage folder
shared at the same path (runyard.launch.netns_hosts says what a host sees). The Jobs API is
then http://<head>:8265 and MLflow listens on the bridge's root-side address; the token, the
MLflow credentials and the process-group / marker bookkeeping are the same as above, and
`down()` also removes the namespaces, the veths and the bridge.

    cluster = up(hosts=3, storage_dir="/srv/storage")
    cluster.jobs_address     # http://198.18.X.10:8265
    exec_on_host(cluster, "worker-1", ["hostname"])
    kill_host(cluster, "worker-1")   # every process of that host, at once
"""

from __future__ import annotations

import json
import os
import random
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
from runyard.launch import netns_hosts
from runyard.launch.netns_hosts import HostLayout, HostNetwork
from runyard.tracking.server import (
    free_port,
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
# Namespaced hosts each have their own ports: one fixed metrics port on every host.
RAY_METRICS_PORT = 8080


@dataclass
class NodeRecord:
    name: str
    pid: int  # leader of the node's process group (`ray start --block`)
    num_cpus: int
    resources: dict
    temp_dir: str
    log: str
    metrics_port: int
    # Namespaced hosts only: the host's network namespace, its address on the bridge, the
    # bridge side of its veth, and its private folder (/tmp, home) on the root side.
    netns: str = ""
    address: str = ""
    root_veth: str = ""
    host_dir: str = ""


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
    # Namespaced hosts only (up(hosts=N)): the bridge, the folder shared by every host.
    network: HostNetwork | None = None
    storage_dir: str = ""

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
        return {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
                "MLFLOW_DISABLE_TELEMETRY": "true", MARKER_ENV: self.cluster_id,
                **self.tracking_env()}

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
        data["nodes"] = [NodeRecord(**node) for node in data.get("nodes", [])]
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
    storage_dir: hosts only; the folder every host sees at the same path (default
        <state_dir>/storage). It is kept by `down`, like the logs.
    hosts_root: hosts only; where each host's private /tmp and home live on this side.
    MLFLOW_TRACKING_USERNAME/PASSWORD: the tracking admin; when no password is set, a random
        one is generated and kept 0600 in <state_dir>/tracking_password.
    Raises UserError for bad arguments or when a cluster is already recorded in state_dir.
    """
    if hosts is not None:
        if workers is not None:
            raise UserError("--hosts and --workers: give one. --hosts N counts every host, the "
                            "head included (--hosts 3 is the head and two workers).")
        if not isinstance(hosts, int) or isinstance(hosts, bool) or not 1 <= hosts <= netns_hosts.MAX_WORKER_HOSTS + 1:
            raise UserError(f"--hosts: {hosts!r}; expected a whole number from 1 to "
                            f"{netns_hosts.MAX_WORKER_HOSTS + 1} (the head and N-1 workers, e.g. --hosts 3).")
        netns_hosts.check_can_make_hosts()
        workers = hosts - 1
        if head_cpus is None:
            head_cpus = 0 if workers else 1
    elif storage_dir is not None:
        raise UserError("--storage-dir: only namespaced hosts (--hosts N) need a shared storage "
                        "folder; the single-namespace cluster shares this machine's disk.")
    elif Path(hosts_root) != netns_hosts.DEFAULT_HOSTS_ROOT:
        raise UserError("--hosts-root: only namespaced hosts (--hosts N) have folders of their own.")
    workers = 2 if workers is None else workers
    head_cpus = 2 if head_cpus is None else head_cpus
    worker_resources = _check_up_arguments(workers, resources, head_cpus, worker_cpus,
                                           head_may_be_empty=hosts is not None and workers > 0)
    if hosts is not None:
        return _up_hosts(worker_resources, Path(state_dir).resolve(), head_cpus, worker_cpus,
                         tracking_backend, with_tracking, storage_dir, Path(hosts_root).resolve(),
                         startup_timeout_s, echo)
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


def down(state_dir: str | Path | LocalCluster = DEFAULT_STATE_DIR, *,
         echo: Callable[[str], None] = print) -> int:
    """Stop everything `up()` recorded in state_dir; return how many processes were ended.

    Workers first, then the head, then the tracking server; then any straggler that still carries
    this cluster's marker. Removes the Ray temp dir and state.json (logs stay in state_dir/logs).
    Given the LocalCluster that up() returned instead, it needs no state.json (a test whose
    temp folder was cleaned away still stops its cluster).
    """
    cluster = state_dir if isinstance(state_dir, LocalCluster) else LocalCluster.load(state_dir)
    if cluster.network is not None:
        return _down_hosts(cluster, echo)
    ended = 0
    for node in reversed(cluster.nodes):
        ended += len(processes_in_group(node.pid))
        # Raylets exit on SIGTERM at once; `ray start --block`, the GCS and the autoscaler
        # monitor ignore it for 10+ s. Nothing on a local cluster needs a graceful GCS exit.
        terminate_process_group(node.pid, timeout_s=3)
        _reap(node.pid)
    ended += _stop_tracking_and_stragglers(cluster)
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
    if cluster.network is not None:
        if len(cluster.nodes) > netns_hosts.MAX_WORKER_HOSTS:
            raise UserError(f"add_worker: at most {netns_hosts.MAX_WORKER_HOSTS} worker hosts fit on one bridge.")
        _start_host(cluster, len(cluster.nodes), num_cpus, node_resources)
    else:
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


def _start_tracking(cluster: LocalCluster, backend: str | None, echo, host: str = "127.0.0.1") -> None:
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
    port = free_port(host)
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
    """`count` distinct TCP ports free on every address, all held open until all are chosen.

    They are drawn below the kernel's ephemeral range: a port the kernel hands out for a
    `bind(0)` or an outgoing connection (an embedded Ray's processes, any client) can be taken
    by someone else between this check and the node binding it, and a Ray agent of another
    cluster answering on our port is refused with a baffling "invalid token"."""
    below_ephemeral = range(PRIVATE_PORTS_FLOOR, max(PRIVATE_PORTS_FLOOR, _ephemeral_port_range()[0]))
    candidates = random.sample(below_ephemeral, min(len(below_ephemeral), 40 * count))
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            if len(sockets) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        while len(sockets) < count:  # a crowded range: fall back on what the kernel picks
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# Ports for local nodes come from [PRIVATE_PORTS_FLOOR, start of the ephemeral range): above
# Ray's default worker ports (10002-19999), which a default `ray start` on this machine takes.
PRIVATE_PORTS_FLOOR = 20000


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default range


# ---------------------------------------------------------------- namespaced hosts


def _up_hosts(worker_resources, state_dir: Path, head_cpus, worker_cpus, tracking_backend,
              with_tracking, storage_dir, hosts_root: Path, startup_timeout_s, echo) -> LocalCluster:
    """up(hosts=N): the same cluster, each node its own host (runyard.launch.netns_hosts)."""
    if (state_dir / STATE_FILE).exists():
        raise UserError(
            f"{state_dir / STATE_FILE}: a local cluster is already recorded here. Stop it with "
            "`runyard cluster local down` (or use another --state-dir)."
        )
    netns_hosts.check_hosts_root(hosts_root, netns_hosts.hidden_checkouts())
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    storage = Path(storage_dir).resolve() if storage_dir is not None else state_dir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    cluster_id = secrets.token_hex(6)
    cluster = LocalCluster(
        cluster_id=cluster_id,
        state_dir=str(state_dir),
        # Every host's private /tmp and home, the wheel and the shared /etc/hosts; removed by down.
        ray_temp_root=str(hosts_root / cluster_id),
        token_path=str(write_private(state_dir / TOKEN_FILE, secrets.token_hex(32))),
        storage_dir=str(storage),
    )
    installs: list[tuple[str, subprocess.Popen]] = []
    try:
        Path(cluster.ray_temp_root).mkdir(parents=True)
        # Recorded before it is made, so that a failure half-way is undone by down().
        cluster.network = netns_hosts.plan_network(_bridge_name(cluster))
        cluster.save()
        netns_hosts.make_network(cluster.network)
        echo(f"local cluster: building runyard's wheel for {1 + len(worker_resources)} hosts")
        netns_hosts.build_runyard_wheel(Path(cluster.ray_temp_root) / "wheel")
        # Every host installs runyard at once, while the tracking server starts; then the head
        # boots, then the workers.
        sizes = [(head_cpus, {"head_node": 1}), *((worker_cpus, r) for r in worker_resources)]
        for index, (cpus, node_resources) in enumerate(sizes):
            install = _make_host(cluster, index, cpus, node_resources)
            installs.append((cluster.nodes[index].name, install))
        if with_tracking:
            _start_tracking(cluster, tracking_backend, echo, host=cluster.network.root_address)
        netns_hosts.wait_for_installs(installs, startup_timeout_s)
        _boot_host(cluster, 0)
        _wait_for_jobs_api(cluster, cluster.nodes[0], startup_timeout_s)
        for index in range(1, 1 + len(worker_resources)):
            _boot_host(cluster, index)
        _wait_for_nodes(cluster, 1 + len(worker_resources), startup_timeout_s)
    except BaseException:
        echo("local cluster: start failed, stopping what was started")
        for _, install in installs:
            if install.poll() is None:
                install.kill()
                install.wait()
        down(cluster, echo=lambda _: None)
        raise
    workers = len(worker_resources)
    echo(f"local cluster up: {1 + workers} hosts (head + {workers} worker{'s' if workers != 1 else ''}), each with its own "
         f"network, mount, UTS and PID namespaces on bridge {cluster.network.bridge} "
         f"({cluster.network.subnet}); token auth on")
    for node in cluster.nodes:
        echo(f"  {node.name:10s} {node.address:15s} cpus={node.num_cpus} resources={json.dumps(node.resources)}")
    echo(f"  Jobs API / dashboard: {cluster.jobs_address}")
    if cluster.tracking_uri:
        echo(f"  MLflow tracking URI:  {cluster.tracking_uri} (basic-auth, user {cluster.tracking_username})")
    echo(f"  shared storage:       {cluster.storage_dir} (the same path on every host)")
    echo(f"  Ray token: {cluster.token_path} (export RAY_AUTH_TOKEN_PATH={cluster.token_path})")
    echo(f"  stop with: runyard cluster local down --state-dir {state_dir}")
    return cluster


def _bridge_name(cluster: LocalCluster) -> str:
    # Interface names have at most 15 characters.
    return f"ry{cluster.cluster_id[:6]}br"


def _host_layout(cluster: LocalCluster, index: int) -> HostLayout:
    name = "head" if index == 0 else f"worker-{index}"
    return HostLayout(
        name=name,
        netns=f"runyard-{cluster.cluster_id}-{name}",
        address=cluster.network.node_address(index),
        dir=os.path.join(cluster.ray_temp_root, name),
        home=str(Path.home()),
    )


def _start_host(cluster: LocalCluster, index: int, num_cpus: int, resources: dict,
                timeout_s: float = 180.0) -> None:
    """Make host `index` (0: the head), install runyard on it, start its `ray start --block`."""
    install = _make_host(cluster, index, num_cpus, resources)
    netns_hosts.wait_for_installs([(cluster.nodes[index].name, install)], timeout_s)
    _boot_host(cluster, index)


def _make_host(cluster: LocalCluster, index: int, num_cpus: int, resources: dict) -> subprocess.Popen:
    """Record and make host `index`: its network namespace, folders and setup script; start
    installing runyard into it (returns the pip process)."""
    layout = _host_layout(cluster, index)
    hosts_dir = Path(cluster.ray_temp_root)
    log = Path(cluster.state_dir) / "logs" / f"{layout.name}.out"
    node = NodeRecord(layout.name, 0, num_cpus, resources, layout.ray_temp_dir_outside, str(log),
                      RAY_METRICS_PORT, netns=layout.netns, address=layout.address,
                      root_veth=f"ry{cluster.cluster_id[:6]}n{index}", host_dir=layout.dir)
    cluster.nodes.append(node)
    cluster.save()
    netns_hosts.add_host_network(cluster.network, layout.netns, node.root_veth, layout.address)
    etc_hosts = hosts_dir / "etc-hosts"
    netns_hosts.write_etc_hosts(etc_hosts, [(n.name, n.address) for n in cluster.nodes])
    wheel = next((hosts_dir / "wheel").glob("runyard-*.whl"))
    install = netns_hosts.prepare_host(layout, wheel, Path(cluster.token_path).read_text().strip())
    shared = [*netns_hosts.python_environment(), netns_hosts.SharedPath(cluster.storage_dir, read_only=False)]
    script = Path(layout.dir) / "setup.sh"
    hidden = [*netns_hosts.hidden_checkouts(), cluster.state_dir]
    script.write_text(netns_hosts.setup_script(layout, shared, hidden, etc_hosts, hosts_dir))
    return install


def _boot_host(cluster: LocalCluster, index: int) -> None:
    """Start the made host `index`: its setup script, then `ray start --block` as its one
    long-lived command (the head's first, so the workers have a GCS to join)."""
    node = cluster.nodes[index]
    layout = _host_layout(cluster, index)
    num_cpus, resources = node.num_cpus, node.resources
    script = Path(layout.dir) / "setup.sh"
    log = Path(node.log)
    head = cluster.network.node_address(0)
    command = [RAY_BIN, "start", "--block", "--node-ip-address", layout.address,
               "--num-cpus", str(num_cpus), "--num-gpus", "0", "--resources", json.dumps(resources),
               "--metrics-export-port", str(RAY_METRICS_PORT),
               "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
    if index == 0:
        command += ["--head", "--port", str(netns_hosts.GCS_PORT), "--include-dashboard", "true",
                    "--dashboard-host", "0.0.0.0", "--dashboard-port", str(netns_hosts.DASHBOARD_PORT)]
        cluster.gcs_address = f"{head}:{netns_hosts.GCS_PORT}"
        cluster.jobs_address = f"http://{head}:{netns_hosts.DASHBOARD_PORT}"
    else:
        command += ["--address", cluster.gcs_address]
    env = netns_hosts.host_env(layout, _host_cluster_env(cluster))
    with open(log, "ab") as out:
        process = subprocess.Popen(
            netns_hosts.host_command(layout, script, command), env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    node.pid = process.pid
    cluster.save()


def _host_cluster_env(cluster: LocalCluster) -> dict[str, str]:
    """What every host process needs to know about the cluster (never printed: it holds the
    tracking password)."""
    # Jobs keep their state in the shared folder (runyard.execute.storage reads it), as a
    # real cluster's nodes name their NFS path or bucket.
    return {**cluster.cluster_env(), "RUNYARD_STORAGE": cluster.storage_dir}


def _stop_tracking_and_stragglers(cluster: LocalCluster) -> int:
    """After the nodes: the tracking server, then any process still carrying the cluster's
    marker (a Ray worker that re-parented); returns how many were stopped."""
    ended = 0
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
    return ended


def _down_hosts(cluster: LocalCluster, echo) -> int:
    """Stop every host (all processes of its PID namespace), then the tracking server, then
    remove the namespaces, veths, bridge and the hosts' folders. Storage and logs stay."""
    ended = 0
    for node in reversed(cluster.nodes):
        ended += kill_host(cluster, node.name)
    ended += _stop_tracking_and_stragglers(cluster)
    for node in reversed(cluster.nodes):
        netns_hosts.remove_host_network(node.netns, node.root_veth)
    netns_hosts.remove_network(cluster.network)
    shutil.rmtree(cluster.ray_temp_root, ignore_errors=True)
    try:
        # The hosts root itself, once no other cluster's hosts live there.
        Path(cluster.ray_temp_root).parent.rmdir()
    except OSError:
        pass
    (Path(cluster.state_dir) / STATE_FILE).unlink(missing_ok=True)
    echo(f"local cluster down: {ended} processes stopped, {len(cluster.nodes)} hosts and bridge "
         f"{cluster.network.bridge} removed")
    return ended


def kill_host(cluster: LocalCluster, name: str, timeout_s: float = 30.0) -> int:
    """SIGKILL every process of one namespaced host at once, as if the machine lost power;
    return how many there were. Its namespace stays (down removes it)."""
    node = cluster.node(name)
    if not node.netns:
        raise UserError(f"{name}: not a namespaced host (start the cluster with --hosts N)")
    victims = processes_in_netns(node.netns)
    if node.pid:
        # The host's init dies with this `unshare` (--kill-child), and the kernel then kills
        # everything else in its PID namespace.
        for signal_to_send in (lambda: os.kill(node.pid, signal.SIGKILL), lambda: os.killpg(node.pid, signal.SIGKILL)):
            try:
                signal_to_send()
            except ProcessLookupError:
                pass
        _reap(node.pid)
    deadline = time.monotonic() + timeout_s
    while processes_in_netns(node.netns):
        if time.monotonic() > deadline:
            raise RuntimeError(f"host {name}: processes {processes_in_netns(node.netns)} still alive "
                               f"{timeout_s:.0f} s after SIGKILL")
        time.sleep(0.1)
    return len(victims)


def processes_in_netns(netns: str) -> list[int]:
    """Live processes (not zombies) in the named network namespace."""
    try:
        inode = os.stat(netns_hosts.NETNS_DIR / netns).st_ino
    except FileNotFoundError:
        return []
    wanted = f"net:[{inode}]"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") != wanted:
                continue
            state = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            found.append(int(entry))
    return found


def host_init_pid(cluster: LocalCluster, name: str) -> int:
    """PID (as the root namespace numbers it) of the host's init: the child of its `unshare`."""
    node = cluster.node(name)
    try:
        children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
    except OSError:
        children = []
    if not node.pid or not children:
        raise RuntimeError(f"host {name} is not running")
    return int(children[0])


def exec_on_host(cluster: LocalCluster, name: str, command: Sequence[str], *,
                 timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run `command` on a namespaced host (all its namespaces, its environment), as a login
    on that machine would; returns the finished process with text stdout/stderr."""
    node = cluster.node(name)
    layout = _host_layout(cluster, cluster.nodes.index(node))
    env = netns_hosts.host_env(layout, _host_cluster_env(cluster))
    argv = ["nsenter", "--target", str(host_init_pid(cluster, name)), "--all", f"--wd={layout.home}",
            "--", *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout_s)
