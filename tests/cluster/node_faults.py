"""Faults the cluster tests cause on purpose, and a look inside a namespaced host: a host
that loses power, a worker that replaces a dead one, a command run on a host. Only tests need
them, so they live here, on the node backends' own interface."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from runyard.launch import local_cluster
from runyard.launch.netns_hosts import HostRecord, NamespacedHosts, host_env
from runyard.launch.nodes import NodeRecord, NodeSize
from runyard.processes import group_alive, tail


def add_worker(cluster: local_cluster.LocalCluster, resources: Mapping[str, float], *,
               num_cpus: int = 1, timeout_s: float = 180.0) -> NodeRecord:
    """Start one more worker node (e.g. to replace one that died) and wait until it joined.
    It is recorded in state.json like the others, so `down()` stops it too."""
    known = local_cluster.alive_node_ids(cluster)
    node = local_cluster.backend_of(cluster).start_node(cluster, NodeSize(num_cpus, dict(resources)))
    deadline = time.monotonic() + timeout_s
    while not local_cluster.alive_node_ids(cluster) - known:
        assert group_alive(node.pid), f"Ray node {node.name} exited during start:\n{tail(Path(node.log))}"
        assert time.monotonic() < deadline, f"Ray node {node.name} did not join within {timeout_s:.0f} s"
        time.sleep(1)
    return node


def kill_host(cluster: local_cluster.LocalCluster, name: str) -> int:
    """Every process of one namespaced host SIGKILLed at once, as if the machine lost power;
    returns how many there were. Its namespace stays (down removes it)."""
    node = cluster.node(name)
    assert isinstance(node, HostRecord), f"{name} is not a namespaced host"
    return NamespacedHosts().stop_node(cluster, node)


def exec_on_host(cluster: local_cluster.LocalCluster, name: str, command: Sequence[str], *,
                 timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """Run `command` on a namespaced host (all its namespaces, its environment), as a login
    on that machine would; returns the finished process with text stdout/stderr."""
    node = cluster.node(name)
    layout = NamespacedHosts.layout(cluster, cluster.nodes.index(node))
    argv = ["nsenter", "--target", str(host_init_pid(node)), "--all", f"--wd={layout.home}", "--", *command]
    return subprocess.run(argv, env=host_env(layout, cluster.cluster_env()), capture_output=True,
                          text=True, timeout=timeout_s)


def host_init_pid(node: NodeRecord) -> int:
    """PID (as the root namespace numbers it) of the host's init: the child of its `unshare`."""
    try:
        children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
    except OSError:
        children = []
    assert node.pid and children, f"host {node.name} is not running"
    return int(children[0])
