"""Helpers for runyard's tests: the repository's paths and the real CLI, as a researcher
would type it. (A module of its own: several conftest.py files exist under tests/.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from runyard.launch import local_cluster, netns_hosts

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """The installed `runyard` console script, as a researcher would type it."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    full_env.update(env or {})
    return subprocess.run([str(RUNYARD), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """`runyard ARGS` in the background, in a session of its own (so that it and its Ray can
    be killed together), its output discarded."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    return subprocess.Popen([str(RUNYARD), *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def tracking_uri(directory: Path) -> str:
    return f"sqlite:///{directory / '.runyard' / 'mlflow.db'}"


def ledgers(directory: Path, prefix: str = "") -> list:
    """The ledgers of the jobs run from `directory` (its default storage, .runyard/) whose id
    starts with `prefix`."""
    from runyard.execute.ledger import Ledger
    from runyard.execute.storage import Storage

    storage = Storage.resolve(None, directory)
    return [Ledger.load(storage.ledger_path(job_id)) for job_id in storage.ledger_ids()
            if job_id.startswith(prefix)]


def children_of(client, parent_id: str) -> list:
    """The child runs of an MLflow parent run (a sweep's trials)."""
    parent = client.get_run(parent_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def wait_for_checkpoint(process: subprocess.Popen, results: Path, pattern: str) -> None:
    """Wait, while `process` runs, until a path under `results` matches `pattern`
    (checkpoint_000001 exists once a trial has saved twice)."""
    deadline = time.monotonic() + 300
    while not list(results.glob(pattern)):
        assert process.poll() is None, "it ended before the checkpoint it was waited for"
        assert time.monotonic() < deadline
        time.sleep(0.5)


def sigkill_at_checkpoint(process: subprocess.Popen, results: Path, pattern: str) -> None:
    """Once a checkpoint matching `pattern` exists, SIGKILL `process` (started with
    start_new_session=True) and every process of its session, Ray's too: a lost machine."""
    wait_for_checkpoint(process, results, pattern)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def ledger_of(directory: Path, key: str):
    """The ledger of job `key` (an id or an MLflow run id) run from `directory`."""
    from runyard.execute.ledger import Ledger
    from runyard.execute.storage import Storage

    return Ledger.find(Storage.resolve(None, directory), key)


# ---------------------------------------------------------------- namespaced hosts


def namespaced_hosts_unavailable() -> str | None:
    """Why namespaced hosts cannot be made here (None: they can). CI runs as root with
    iproute2 and util-linux, so there the tests run rather than skip."""
    if not os.uname().sysname == "Linux":
        return "namespaced hosts need Linux network and mount namespaces"
    if os.geteuid() != 0:
        return "namespaced hosts need root (ip netns, mount and PID namespaces); CI runs as root"
    missing = [tool for tool in netns_hosts.REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y iproute2 util-linux)"
    return None


def leftovers_of(cluster: local_cluster.LocalCluster) -> list[str]:
    """What of this cluster is still on the machine after `down` (empty when nothing is)."""
    left = []
    netns = set(netns_hosts.netns_names())
    left += [f"netns {node.netns}" for node in cluster.nodes if node.netns in netns]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = {node.root_veth for node in cluster.nodes} | {cluster.network.bridge}
    left += [f"link {name}" for name in names if f" {name}:" in links or f" {name}@" in links]
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount with {cluster.cluster_id}" for line in mounts.splitlines() if cluster.cluster_id in line]
    left += [f"process {pid}" for pid in local_cluster.processes_with_marker(cluster.cluster_id)]
    if Path(cluster.ray_temp_root).exists():
        left.append(f"folder {cluster.ray_temp_root}")
    return left


# ---------------------------------------------------------------- prepared data


def write_separable_shards(out: Path, train_shards: int, images_per_shard: int, side: int,
                           seed: int = 0) -> Path:
    """A prepared dataset as `runyard data prepare` writes it (shards, receipts, a manifest
    with each shard's sha256): `train_shards` training shards and one validation shard of
    random images in 4 classes that show in their colour (red, green, blue, brighter red), so
    that a linear model learns them and the Recipe's preflight passes."""
    import numpy as np

    from runyard.data.shards import PARTS, write_manifest, write_shard

    (out / PARTS).mkdir(parents=True)
    classes, rng, receipts = 4, np.random.default_rng(seed), []
    for index in range(train_shards + 1):
        split = "train" if index < train_shards else "val"
        labels = rng.integers(0, classes, images_per_shard)
        images = rng.integers(0, 128, (images_per_shard, side, side, 3), dtype=np.uint8)
        images[np.arange(images_per_shard), :, :, labels % 3] += np.uint8(100)
        images[labels == 3] += np.uint8(20)
        receipts.append(write_shard(out, f"{split}-{index:05d}.parquet", split, images, labels,
                                    classes))
    names = [f"class-{c}" for c in range(classes)]
    write_manifest(out, receipts, names, names, (side, side, 3), {"kind": "test"})
    return out
