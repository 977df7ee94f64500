"""Where a job's durable state lives: its ledger, its Tune and Ray Train state, its trials'
checkpoints. One root for all of it:

- embedded (the default): `.runyard/` in the working directory;
- a cluster: a path every node mounts at the same place (NFS, a lab's shared disk), or a URI
  that Ray's storage layer reads through pyarrow (`s3://bucket/prefix`, `gs://...`).

Given by `--storage`, else RUNYARD_STORAGE (a cluster sets it in its nodes' environment),
else the default -- except for a driver submitted to a cluster, which refuses: its working
dir is Ray's temporary copy of the project, gone with the cluster. Everything here goes through pyarrow's filesystem layer (runyard.fsio), so
a local folder and a bucket take the same code path.

Layout under the root:
    sweeps/<job id>.json        the ledger (execute/ledger.py)
    ray_results/<job id>[-xN]   one Tune experiment per segment of the job

A bucket is reached with the S3 client's usual environment (S3_CLIENT_ENV): credentials,
region, and AWS_ENDPOINT_URL for an S3-compatible server. A node that has no settings of its
own (a cloud node has an instance profile instead) gets them from the job that names the
bucket: `client_env` is what a submitted job carries.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import UserError
from runyard.fsio import delete_file, filesystem, write_text
from runyard.paths import project_storage

ENV = "RUNYARD_STORAGE"
SUBMISSION_ENV = "RUNYARD_SUBMISSION_ID"  # set by `runyard submit` for the job's driver
LEDGERS, TUNE = "sweeps", "ray_results"
FINAL_RESULTS = "results"  # what each job's trials scored when its driver last ended
# What pyarrow's S3 client (the AWS SDK) reads from the environment.
S3_CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Storage:
    root: str  # an absolute local path, or a URI with a scheme

    @classmethod
    def resolve(cls, explicit: str | None, workdir: Path) -> Storage:
        given = explicit or os.environ.get(ENV)
        if not given and os.environ.get(SUBMISSION_ENV):
            # A submitted driver's working dir is Ray's temporary copy of the project on the
            # head: a ledger and checkpoints there would be gone with the cluster.
            raise UserError(
                f"storage: not set on this cluster, and this driver (job "
                f"{os.environ[SUBMISSION_ENV]}) runs in Ray's temporary copy of the project "
                f"({Path(workdir).resolve()}), which goes with the cluster. Submit with --storage "
                f"PATH_OR_URI (a path every node mounts, or a bucket), or set {ENV} in the "
                "nodes' environment (`runyard cluster local up` does).")
        if not given:
            return cls(str(project_storage(workdir)))
        if "://" in given and not given.startswith("file://"):
            check_no_credentials(given)
            return cls(given.rstrip("/"))
        return cls(str(Path(given.removeprefix("file://")).expanduser().resolve()))

    @property
    def is_uri(self) -> bool:
        return "://" in self.root

    def join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def tune_path(self, name: str) -> str:
        return self.join(TUNE, name)

    def ledger_path(self, job_id: str) -> str:
        return self.join(LEDGERS, f"{job_id}.json")

    def final_results_path(self, job_id: str) -> str:
        return self.join(FINAL_RESULTS, f"{job_id}.json")

    def ledger_ids(self) -> list[str]:
        """Job ids with a ledger here, oldest name first."""
        from pyarrow import fs

        store, folder = filesystem(self.join(LEDGERS))
        found = store.get_file_info(fs.FileSelector(folder, allow_not_found=True))
        return sorted(Path(info.path).stem for info in found
                      if info.type == fs.FileType.File and info.path.endswith(".json"))

    def exists(self, path: str) -> bool:
        from pyarrow import fs

        store, inner = filesystem(path)
        return store.get_file_info(inner).type != fs.FileType.NotFound


def check_no_credentials(uri: str) -> None:
    """UserError (not repeating them) when `uri` carries credentials (`s3://KEY:SECRET@bucket`,
    which pyarrow accepts): they would be written into the ledger, the job's command line
    and its runs."""
    scheme, _, rest = uri.partition("://")
    if "@" in rest.split("/", 1)[0]:
        raise UserError(f"storage {scheme}://...: credentials in the URI; give the bucket alone "
                        "and the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or "
                        "the nodes' instance profile)")


def client_env(root: str | None) -> dict[str, str]:
    """The settings of this environment that a process on another node needs to reach the
    storage `root` as this one does: for an s3:// bucket, the S3 client's variables set here,
    secrets among them (a job carries them in its env, which the Jobs API shows only to
    holders of the cluster's token); nothing for a path, or when no storage is named (then
    the nodes' own RUNYARD_STORAGE and settings apply)."""
    if not root or not root.startswith("s3://"):
        return {}
    return {name: os.environ[name] for name in S3_CLIENT_ENV if os.environ.get(name)}


def check_writable(storage: Storage) -> None:
    """UserError unless this process can write under the storage root."""
    probe = storage.join(f".probe-{uuid.uuid4().hex}")
    try:
        write_text(probe, "probe")
        delete_file(probe)
    except Exception as error:  # noqa: BLE001 — pyarrow raises OSError and its own types
        raise UserError(f"storage {storage.root}: cannot write here ({error}); give a "
                        f"--storage (or {ENV}) that this node can write") from None


def check_every_node_shares(storage: Storage, timeout_s: float = 120.0) -> None:
    """UserError naming each node of the connected Ray cluster that cannot use the storage
    root, before any trial starts: a path that is not mounted there (a node that writes into
    its own local folder of that name does not see what this driver wrote), or a bucket it
    has no credentials for. Otherwise Tune finds out at the first checkpoint, one trial at a
    time."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = storage.join(f".probe-{uuid.uuid4().hex}")
    write_text(marker, "written by the driver")
    try:
        probe = ray.remote(num_cpus=0)(_probe_on_this_node)
        pending = {}
        for node in (n for n in ray.nodes() if n.get("Alive")):
            where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            pending[probe.options(scheduling_strategy=where).remote(storage.root, marker)] = \
                node.get("NodeManagerAddress", node["NodeID"])
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        problems = [f"  node {pending[ref]}: {ray.get(ref)}" for ref in ready if ray.get(ref)]
        problems += [f"  node {pending[ref]}: no answer in {timeout_s:g} s" for ref in late]
    finally:
        delete_file(marker)
    if problems:
        raise UserError(f"storage {storage.root} is not shared by every node of the cluster; a "
                        "job's state must be reachable from all of them (a path mounted at the "
                        "same place on every node, or a bucket), given by --storage or "
                        f"{ENV}:\n" + "\n".join(problems))


def _probe_on_this_node(root: str, marker: str) -> str:
    """'' when this node sees the driver's `marker` under `root` and can write there, else why
    not."""
    from pyarrow import fs

    store, inner = filesystem(marker)
    if store.get_file_info(inner).type == fs.FileType.NotFound:
        return f"does not see {marker}, which the driver just wrote (a local folder, not a shared one)"
    try:
        check_writable(Storage(root))
    except UserError as error:
        return str(error)
    return ""
