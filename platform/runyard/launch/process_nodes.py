"""Ray nodes as process groups of this machine: `runyard cluster local up --workers N`.

Each node is one `ray start --block`, the leader of its own process group, bound to
127.0.0.1 with every port explicit and free (two clusters, or anyone's default `ray start`,
on one machine never collide) and a temp dir of its own under a short /tmp folder (Ray puts
unix sockets there, with a 107-byte path limit). They share this machine's disk, so the
cluster's storage is a folder of it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from runyard.launch.nodes import OBJECT_STORE_BYTES, RAY_BIN, ClusterState, NodeRecord, NodeSize
from runyard.processes import start_group, stop_group

# Ports handed to each node's worker processes (--worker-port-list); Ray needs one per live
# worker (prestarted workers, actors, the job driver and its supervisor).
WORKER_PORTS_PER_NODE = 32
# metrics, agent http, agent grpc, runtime env agent, node manager, object manager + workers.
NODE_PORTS = 6 + WORKER_PORTS_PER_NODE
# Ports for local nodes come from [PRIVATE_PORTS_FLOOR, start of the ephemeral range): above
# Ray's default worker ports (10002-19999), which a default `ray start` on this machine takes.
PRIVATE_PORTS_FLOOR = 20000
# Raylets exit on SIGTERM at once; `ray start --block`, the GCS and the autoscaler monitor
# ignore it for 10+ s. Nothing on a local cluster needs a graceful GCS exit.
NODE_STOP_GRACE_S = 3.0


class ProcessNodes:
    kind = "processes"
    record = NodeRecord
    ray_nodes = True

    def temp_root(self, cluster_id: str) -> str:
        return tempfile.mkdtemp(prefix="ry-", dir="/tmp")

    def prepare(self, cluster: ClusterState, sizes: list[NodeSize]) -> None:
        """Nothing to make: the nodes are processes of this machine."""

    def tracking_host(self, cluster: ClusterState) -> str:
        return "127.0.0.1"

    def start_node(self, cluster: ClusterState, size: NodeSize) -> NodeRecord:
        index = len(cluster.nodes)
        name = "head" if index == 0 else f"worker-{index}"
        temp_dir = os.path.join(cluster.ray_temp_root, "head" if index == 0 else f"w{index}")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(size.num_cpus), "--num-gpus", "0",
                  "--resources", json.dumps(size.resources), "--temp-dir", temp_dir, "--disable-usage-stats"]
        ports_env = {}
        if index == 0:
            gcs, dashboard, client, autoscaler_metrics, dashboard_metrics, *node_ports = free_ports(5 + NODE_PORTS)
            command = [RAY_BIN, "start", "--head", "--block", "--port", str(gcs),
                       "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                       "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client)]
            cluster.gcs_address = f"127.0.0.1:{gcs}"
            cluster.jobs_address = f"http://127.0.0.1:{dashboard}"
            # The autoscaler's and dashboard's own metrics ports are fixed (44217, 44227)
            # unless set through these variables; two clusters on one machine would fight.
            ports_env = {"AUTOSCALER_METRIC_PORT": str(autoscaler_metrics),
                         "DASHBOARD_METRIC_PORT": str(dashboard_metrics)}
        else:
            node_ports = free_ports(NODE_PORTS)
            command = [RAY_BIN, "start", "--block", "--address", cluster.gcs_address]
        log = Path(cluster.state_dir) / "logs" / f"{name}.out"
        with open(log, "ab") as out:
            process = start_group([*command, *common, *node_port_flags(node_ports)],
                                  env={**cluster.node_env(), **ports_env}, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cluster.state_dir)
        node = NodeRecord(name, process.pid, size.num_cpus, size.resources, temp_dir, str(log), node_ports[0])
        cluster.nodes.append(node)
        cluster.save()
        return node

    def stop_node(self, cluster: ClusterState, node: NodeRecord) -> int:
        return stop_group(node.pid, NODE_STOP_GRACE_S)

    def remove(self, cluster: ClusterState) -> str:
        shutil.rmtree(cluster.ray_temp_root, ignore_errors=True)
        return ""

    def describe(self, cluster: ClusterState) -> list[str]:
        workers = len(cluster.nodes) - 1
        return [f"local cluster up: {1 + workers} Ray nodes (head + {workers} workers), token auth on"]


def node_port_flags(ports: list[int]) -> list[str]:
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


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default range
