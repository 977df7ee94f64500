"""The node interface of runyard's own clusters: what `local_cluster`'s one up/down sequence
asks of a backend, whatever a node is. Today a node is a process group on this machine
(launch.process_nodes), a namespaced host (launch.netns_hosts) or a Slurm host, with the Slurm
controller as node 0 (launch.slurm_hosts); a Kubernetes pod would be one more module
implementing `NodeBackend`, as Ray's own `cluster_utils.Cluster` adds and removes nodes behind
one `add_node` / `remove_node`.

A backend keeps nothing another process needs: everything it starts is recorded on the
cluster (`ClusterState`, local_cluster.LocalCluster saved as state.json before each step), so
another process can stop it with `down`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

RAY_BIN = str(Path(sys.executable).with_name("ray"))
# The object store is shared memory; the default (30% of RAM per node) is far too much for
# three nodes on a shared 2-core development box.
OBJECT_STORE_BYTES = 150 * 1024 * 1024


@dataclass
class NodeSize:
    """What one Ray node offers: logical CPUs and custom resources (head_node / gpu_node)."""

    num_cpus: int
    resources: dict


@dataclass
class NodeRecord:
    """One started Ray node, as state.json keeps it."""

    name: str  # head, worker-1, worker-2, ...
    pid: int  # leader of the process group that holds the node (its `ray start --block`)
    num_cpus: int
    resources: dict
    temp_dir: str  # Ray's session folders of this node, as this machine reads them
    log: str
    metrics_port: int
    address: str = "127.0.0.1"  # the node's IP address


class ClusterState(Protocol):
    """What a backend reads and writes of the cluster's record (local_cluster.LocalCluster,
    kept in state.json): the record of every node it starts, the addresses the head gives."""

    cluster_id: str
    state_dir: str  # logs/<node>.out go here
    ray_temp_root: str
    token_path: str
    storage_dir: str  # every node sees it at this path
    nodes: list[NodeRecord]
    gcs_address: str
    jobs_address: str
    network: Any  # a backend's own network record (namespaced hosts: their bridge)

    def save(self) -> None: ...

    def node_env(self) -> dict[str, str]:
        """The environment of a node process on this machine."""

    def cluster_env(self) -> dict[str, str]:
        """What every node process knows about the cluster, wherever it runs."""


class NodeBackend(Protocol):
    """How nodes of one kind are made, started and removed."""

    kind: ClassVar[str]  # recorded in state.json, so `down` finds the backend again
    record: ClassVar[type[NodeRecord]]  # the record its nodes are kept as
    # Its nodes are Ray nodes: `up` waits for them through the head's Jobs API and state API.
    # Otherwise (Slurm's nodes, where each job starts its own Ray) through `wait_for_nodes`.
    ray_nodes: ClassVar[bool]

    def temp_root(self, cluster_id: str) -> str:
        """The folder of the cluster's per-node files on this machine (Ray's temp dirs, a
        host's /tmp); `down` removes it."""

    def prepare(self, cluster: ClusterState, sizes: list[NodeSize]) -> None:
        """Make what the nodes need before the first starts (the head is sizes[0]); slow
        work may go on in the background until `start_node` needs it."""

    def tracking_host(self, cluster: ClusterState) -> str:
        """The address the tracking server binds on this machine, reachable from every node."""

    def start_node(self, cluster: ClusterState, size: NodeSize) -> NodeRecord:
        """Start the next node (the head when there is none yet, which sets the cluster's GCS
        and Jobs API addresses), record it on the cluster and return its record. It has not
        necessarily joined yet."""

    def wait_for_nodes(self, cluster: ClusterState, timeout_s: float) -> None:
        """Only where not ray_nodes: return once every started node serves; RuntimeError
        naming the logs when one exited or timeout_s passed."""

    def stop_node(self, cluster: ClusterState, node: NodeRecord) -> int:
        """Stop every process of the node; return how many there were."""

    def remove(self, cluster: ClusterState) -> str:
        """After every node stopped: remove what `prepare` made, even half made; returns what
        was removed besides processes, for `down`'s summary ('' for nothing)."""

    def describe(self, cluster: ClusterState) -> list[str]:
        """`up`'s summary: the first line, then one per node or detail worth printing."""
