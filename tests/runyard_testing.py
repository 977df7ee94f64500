"""Helpers for runyard's tests: the repository's paths and the real CLI, as a researcher
would type it. (A module of its own: several conftest.py files exist under tests/.)"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runyard.launch import local_cluster, netns_hosts
from runyard.launch.process_nodes import free_ports
from runyard.processes import processes_with_env

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")


# A command's prefix that starts it with Ctrl-C (SIGINT) at its default, as at a terminal. A
# process started in the background by a non-interactive shell (`nohup ... &`, some CI
# runners) passes SIGINT on ignored, and Python then never turns it into KeyboardInterrupt:
# a test that stops a command "with Ctrl-C" would wait for nothing. (exec keeps the pid.)
CTRL_C_AS_AT_A_TERMINAL = [sys.executable, "-c", "import os, signal, sys; "
                           "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                           "os.execv(sys.argv[1], sys.argv[1:])"]


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """The installed `runyard` console script, as a researcher would type it."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    full_env.update(env or {})
    return subprocess.run([str(RUNYARD), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def embedded_ray_sessions() -> set[str]:
    """The session folders of the Rays started on this machine without a cluster: each start
    leaves one under Ray's temp folder (/tmp/ray unless RAY_TMPDIR moves it). A command that
    must not start Ray leaves this set as it was."""
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    return {path.name for path in root.glob("session_2*")}


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


def processes_of(cluster: local_cluster.LocalCluster) -> list:
    """The live processes that carry the cluster's marker in their environment."""
    return processes_with_env(local_cluster.MARKER_ENV, cluster.cluster_id)


def leftovers_of(cluster: local_cluster.LocalCluster) -> list[str]:
    """What of this cluster is still on the machine after `down` (empty when nothing is)."""
    left = []
    netns = set(netns_hosts.netns_names())
    left += [f"netns {node.netns}" for node in cluster.nodes if node.netns and node.netns in netns]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    # (A Slurm cluster's controller runs on this machine: no veth of its own.)
    names = {node.root_veth for node in cluster.nodes if node.root_veth} | {cluster.network.bridge}
    left += [f"link {name}" for name in names if f" {name}:" in links or f" {name}@" in links]
    mounts = Path("/proc/self/mountinfo").read_text()
    left += [f"mount with {cluster.cluster_id}" for line in mounts.splitlines() if cluster.cluster_id in line]
    left += [f"process {process.pid}" for process in processes_of(cluster)]
    if Path(cluster.ray_temp_root).exists():
        left.append(f"folder {cluster.ray_temp_root}")
    return left


def laptop(hosts, project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """runyard on the laptop (the root namespace) against the hosts' Jobs API, with the token
    and MLflow credentials, plus `env`."""
    cluster = hosts.cluster
    full_env = {**os.environ, "RAY_AUTH_TOKEN_PATH": cluster.token_path,
                "MLFLOW_TRACKING_USERNAME": cluster.tracking_username,
                "MLFLOW_TRACKING_PASSWORD": hosts.tracking_password, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    full_env.pop("RUNYARD_STORAGE", None)
    return subprocess.run([str(RUNYARD), *args, "--address", cluster.jobs_address], cwd=project,
                          env=full_env, capture_output=True, text=True, timeout=180)


def finished(hosts, job_id: str, timeout_s: float = 420) -> tuple[str, str]:
    """The submitted job's end state (waiting at most `timeout_s`) and its driver's output."""
    from runyard.launch import jobs_api

    cluster = hosts.cluster
    state = jobs_api.wait(job_id, cluster.jobs_address, timeout_s=timeout_s, state_dir=cluster.state_dir)
    return state, "".join(jobs_api.logs(job_id, cluster.jobs_address, state_dir=cluster.state_dir))


def job_runs(hosts, monkeypatch, experiment: str, job_id: str) -> list:
    """The MLflow runs of job `job_id` in the hosts' tracking server."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", hosts.cluster.tracking_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", hosts.tracking_password)
    client = MlflowClient(hosts.cluster.tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id],
                              filter_string=f"tags.`runyard.sweep_id` = '{job_id}'")


# ---------------------------------------------------------------- a quick sweep


def toy_sweep(name: str, experiment: str, sleep_s: float, iterations: int, every: int = 1) -> str:
    """A job spec: two toy.quadratic trials over config.x, `iterations` steps of `sleep_s`
    seconds, a checkpoint every `every` steps (0: only at the end). No preflight and no data,
    so it starts at once. It ends inside its sweep block: lines appended with two spaces of
    indent are sweep keys."""
    return f"""\
name: {name}
workload: toy.quadratic
config: {{sleep_s: {sleep_s}}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: {every}}}
tracking: {{experiment: {experiment}}}
sweep:
  samples: 2
  metric: score
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


# ---------------------------------------------------------------- an S3 server


@dataclass(frozen=True)
class S3Bucket:
    name: str
    endpoint: str  # http://HOST:PORT
    env: dict  # the S3 client's settings that reach it: endpoint, region, fresh credentials

    def keys(self, prefix: str) -> list[str]:
        """Every object under `prefix` in the bucket, as `prefix/...` keys."""
        from pyarrow import fs

        found = self.filesystem().get_file_info(
            fs.FileSelector(f"{self.name}/{prefix}", recursive=True, allow_not_found=True))
        return sorted(info.path.removeprefix(f"{self.name}/") for info in found
                      if info.type == fs.FileType.File)

    def filesystem(self, allow_bucket_creation: bool = False):
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=self.endpoint, region=self.env["AWS_DEFAULT_REGION"],
                               access_key=self.env["AWS_ACCESS_KEY_ID"],
                               secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
                               allow_bucket_creation=allow_bucket_creation)


@contextmanager
def s3_bucket(host: str, name: str, log: Path, timeout_s: float = 30.0) -> Iterator[S3Bucket]:
    """A bucket on a moto S3 server (an S3-compatible HTTP server, what Ray's own storage
    tests use) listening on `host` only: this machine's loopback, or a test bridge's address
    that the namespaced hosts reach. The server ends with the block."""
    port = free_ports(1)[0]
    endpoint = f"http://{host}:{port}"
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # No proxy may stand between the test and its own server.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, f"moto server exited with {server.returncode}: {log.read_text()[-2000:]}"
            try:
                opener.open(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto server not answering after {timeout_s:g} s"
                time.sleep(0.2)
        bucket = S3Bucket(name, endpoint, {
            "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": f"AKIA{secrets.token_hex(8).upper()}",
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)})
        bucket.filesystem(allow_bucket_creation=True).create_dir(name)
        yield bucket
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


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


def local_slurm_unavailable() -> str | None:
    """Why the local Slurm cluster cannot be made here (None: it can). CI installs the
    daemons with `make system-deps` and runs as root."""
    from runyard.launch import slurm_hosts

    missing = [program for program in slurm_hosts.REQUIRED_PROGRAMS if shutil.which(program) is None]
    if missing:
        return f"{', '.join(missing)} not installed (make system-deps, as root)"
    return namespaced_hosts_unavailable()
