"""Prepared datasets kept in storage, named by a URI: `data.path: s3://bucket/datasets/imagenet64`
(or `gs://...`, or `file:///mnt/shared/datasets/imagenet64` for a shared folder).

The folder is the one `runyard data prepare` wrote, copied as it is (manifest.json and the
shards). It is read through pyarrow's filesystem layer (runyard.fsio) and never in place:

- `check_stored(uri)` (`check_dataset` for any data.path), the driver's check before any
  trial starts: the manifest is there and whole, and every shard it lists is there with the
  recorded size. Cheap (the manifest and one listing of the shards); no pixel is read.
- `local_copy(uri)`, in each trial process: the dataset in this node's cache, fetched on
  first use. Each shard is hashed as it streams in and renamed into place only when its
  sha256 matches the manifest; the manifest is written last and marks the copy complete.
  Concurrent trials on one node share one fetch: the first holds the copy's lock (a
  `flock`, which the kernel releases if its holder dies), the others wait for it and then
  find every shard in place. Then the shards are memory-mapped from local disk, as a plain
  path's are.

The cache is `RUNYARD_DATA_CACHE`, else `~/.cache/runyard/datasets`, one folder per dataset
named by its manifest's sha256: the same data under two URIs is fetched once, and a dataset
prepared again under the same URI is fetched anew. Nothing is evicted.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyarrow import fs

from runyard.data.shards import (MANIFEST, atomic_write_bytes, load_manifest, manifest_shards,
                                 parse_manifest)
from runyard.errors import UserError
from runyard.fsio import filesystem, is_uri

CACHE_ENV = "RUNYARD_DATA_CACHE"
LOCK = ".lock"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class StoredCopy:
    """A dataset in storage, as this node has it."""

    path: Path  # the node-local folder: manifest.json and the shards, as `prepare` wrote them
    fetched: int  # shards this call copied from storage (0: another process, or an earlier run, had)
    fetched_bytes: int


def dataset_dir(path: str) -> Path:
    """The local folder to read for a `data.path`: a URI's copy in this node's cache (fetched
    if need be), or the path itself."""
    return local_copy(path).path if is_uri(path) else Path(path)


def check_dataset(path: str) -> dict[str, Any]:
    """The manifest of the dataset a `data.path` names, checked where it is (in storage for a
    URI, on this machine's disk for a path); UserError naming what is missing."""
    return check_stored(path) if is_uri(path) else load_manifest(path)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "runyard" / "datasets")


def check_stored(uri: str) -> dict[str, Any]:
    """The manifest of the dataset at `uri`; UserError naming the URI (and the shard) when it
    is missing, unreadable or incomplete."""
    store, root = _open(uri)
    manifest = _read_manifest(store, root, uri)
    shards = manifest_shards(manifest)
    try:
        infos = store.get_file_info([posixpath.join(root, shard["file"]) for shard in shards])
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"{uri}: cannot list its shards ({error})") from None
    for shard, info in zip(shards, infos):
        where = _shard_uri(uri, shard)
        if info.type == fs.FileType.NotFound:
            raise UserError(f"{where}: listed in {MANIFEST} but not in storage. Fix: copy the "
                            "whole folder `runyard data prepare` wrote, every shard with it.")
        if info.size != shard["bytes"]:
            raise UserError(f"{where}: {info.size} bytes in storage, the manifest says "
                            f"{shard['bytes']}: the copy was cut short or the shard changed. "
                            "Fix: copy the dataset folder into storage again.")
    return manifest


def local_copy(uri: str, lock_timeout_s: float = 3600.0) -> StoredCopy:
    """The dataset at `uri` in this node's cache, fetched and verified once per node."""
    store, root = _open(uri)
    raw = _read_manifest_bytes(store, root, uri)
    manifest = _checked(parse_manifest(raw, f"{uri}/{MANIFEST}"), uri)
    target = cache_root() / hashlib.sha256(raw).hexdigest()[:32]
    if (target / MANIFEST).exists():
        return StoredCopy(target, 0, 0)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{uri}: cannot make its node-local copy in {target} ({error}). Fix: "
                        f"point {CACHE_ENV} at a folder of this node's local disk that runyard "
                        "can write.") from None
    with _exclusive(target / LOCK, uri, lock_timeout_s):
        if (target / MANIFEST).exists():  # another process finished the copy while we waited
            return StoredCopy(target, 0, 0)
        for leftover in target.glob(".*.tmp-*"):  # of a fetch whose process died; we hold the lock
            leftover.unlink()
        missing = [shard for shard in manifest_shards(manifest)
                   if not _in_place(target / shard["file"], shard["bytes"])]
        _check_room(target, sum(shard["bytes"] for shard in missing), uri)
        for shard in missing:
            _fetch(store, posixpath.join(root, shard["file"]), target / shard["file"], shard, uri)
        atomic_write_bytes(target / MANIFEST, raw)
    return StoredCopy(target, len(missing), sum(shard["bytes"] for shard in missing))


def _open(uri: str) -> tuple[fs.FileSystem, str]:
    try:
        return filesystem(uri.rstrip("/"))
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"{uri}: cannot open it as storage ({error}). Fix: a URI that pyarrow "
                        "reads (s3://bucket/prefix, gs://bucket/prefix, file:///shared/path), "
                        "with credentials on every node.") from None


def _read_manifest_bytes(store: fs.FileSystem, root: str, uri: str) -> bytes:
    path = posixpath.join(root, MANIFEST)
    try:
        info = store.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            raise UserError(
                f"{uri}: no {MANIFEST} there, so it is no prepared dataset (or its copy into "
                f"storage is not finished: {MANIFEST} is what `runyard data prepare` writes "
                f"last). Fix: copy the whole folder `runyard data prepare` wrote to {uri}, or "
                "correct data.path.")
        with store.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"{uri}: cannot read {MANIFEST} ({error}). Fix: check the URI and that "
                        "this node has credentials for it.") from None


def _read_manifest(store: fs.FileSystem, root: str, uri: str) -> dict[str, Any]:
    return _checked(parse_manifest(_read_manifest_bytes(store, root, uri), f"{uri}/{MANIFEST}"), uri)


def _checked(manifest: dict[str, Any], uri: str) -> dict[str, Any]:
    """The manifest, if every shard has a plain file name (a copy is written only inside its
    cache folder) and a sha256 to verify the copy against."""
    for shard in manifest_shards(manifest):
        name = shard.get("file", "")
        if not name or posixpath.basename(name) != name or name.startswith("."):
            raise UserError(f"{uri}/{MANIFEST}: shard {name!r} is not a file name of the folder. "
                            "Fix: rerun `runyard data prepare` into a new directory.")
        digest = shard.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise UserError(f"{_shard_uri(uri, shard)}: {MANIFEST} has no sha256 for it, so its "
                            "copy cannot be verified. Fix: prepare the dataset again with "
                            "`runyard data prepare` (it records one per shard) and copy it anew.")
    return manifest


def _shard_uri(uri: str, shard: dict[str, Any]) -> str:
    return f"{uri.rstrip('/')}/{shard['file']}"


def _in_place(path: Path, size: int) -> bool:
    # A shard is renamed into the cache only after its checksum matched, so one of the right
    # size was verified by an earlier fetch that stopped before the manifest.
    return path.is_file() and path.stat().st_size == size


def _check_room(target: Path, needed: int, uri: str) -> None:
    free = shutil.disk_usage(target).free
    if needed > free:
        raise UserError(f"{uri}: its shards need {needed / 2**30:.1f} GiB in {target}, which "
                        f"has {free / 2**30:.1f} GiB free. Fix: free space there, or point "
                        f"{CACHE_ENV} at a larger local disk on every node.")


def _fetch(store: fs.FileSystem, source: str, path: Path, shard: dict[str, Any], uri: str) -> None:
    """Copy one shard to `path`, hashing it on the way; it appears there only if it matches."""
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        try:
            with store.open_input_stream(source) as stream, open(staging, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, pa.ArrowException) as error:
            # Reading storage or writing the cache: the error itself says which.
            raise UserError(f"{_shard_uri(uri, shard)}: cannot copy it into {path.parent} "
                            f"({error}). Fix: check that the whole dataset folder is in storage "
                            f"and that this node's cache ({CACHE_ENV}) has room.") from None
        if digest.hexdigest() != shard["sha256"]:
            raise UserError(
                f"{_shard_uri(uri, shard)}: sha256 {digest.hexdigest()[:16]}..., the manifest "
                f"says {shard['sha256'][:16]}...: the shard in storage is not the one `runyard "
                "data prepare` wrote (corrupted, or changed after the manifest). Fix: copy the "
                "dataset folder into storage again, or prepare it again.")
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


@contextmanager
def _exclusive(path: Path, uri: str, timeout_s: float) -> Iterator[None]:
    """This node's one fetch of a dataset: an exclusive flock on `path`, waited for at most
    `timeout_s` (another process may be fetching ImageNet)."""
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"{uri}: another process on this node has been fetching it into "
                        f"{path.parent} for over {timeout_s:g} s. Fix: look for a stuck trial "
                        f"on this node, or give it a cache of its own ({CACHE_ENV}).") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
