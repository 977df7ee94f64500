"""A prepared dataset kept in storage (`data.path` a URI): checked by the driver without
reading a pixel, copied to each node's disk once however many trials want it at the same time,
verified shard by shard against the manifest's sha256, and refused, naming the path, before
anything is made when it is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runyard_testing import write_separable_shards

from runyard import api
from runyard.data import check_stored, load_manifest
from runyard.data.shards import MANIFEST
from runyard.data.stored import CACHE_ENV, local_copy
from runyard.errors import UserError
from runyard.workloads.base import WorkloadContext
from runyard.workloads.sl.linear import LinearClassifier

TRAIN_SHARDS, IMAGES_PER_SHARD, SIDE = 6, 1500, 32  # 4.6 MB a shard: a copy that takes a while


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """6 training shards and 1 validation shard of 32x32 images in 4 classes."""
    return write_separable_shards(tmp_path_factory.mktemp("prepared") / "random32",
                                  TRAIN_SHARDS, IMAGES_PER_SHARD, SIDE)


@pytest.fixture
def in_storage(prepared, tmp_path) -> tuple[Path, str]:
    """A copy of the dataset in a 'storage' folder, and its URI."""
    folder = tmp_path / "storage" / "datasets" / "random32"
    shutil.copytree(prepared, folder, ignore=shutil.ignore_patterns(".parts"))
    return folder, folder.as_uri()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node-cache"))
    return tmp_path / "node-cache"


FETCH = """\
import json, os, sys, time
from pathlib import Path
from runyard.data import load_manifest
from runyard.data.stored import local_copy
uri, go = sys.argv[1], Path(sys.argv[2])
Path(sys.argv[3]).touch()  # imported: ready to race
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
started = time.time()
copy = local_copy(uri)
ended = time.time()
load_manifest(copy.path, verify_checksums=True)  # what it got is whole: every byte hashed
print(json.dumps({"fetched": copy.fetched, "path": str(copy.path), "started": started,
                  "ended": ended}))
"""


def test_two_trials_on_one_node_fetch_a_stored_dataset_once(in_storage, cache, tmp_path):
    _, uri = in_storage
    script = tmp_path / "fetch.py"
    script.write_text(FETCH)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    trials = [subprocess.Popen([sys.executable, str(script), uri, str(go), str(flag)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for flag in ready]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready):
        assert time.monotonic() < deadline and all(t.poll() is None for t in trials), \
            [t.communicate() for t in trials if t.poll() is not None]
        time.sleep(0.01)
    go.touch()
    outputs = [trial.communicate(timeout=120) for trial in trials]
    assert [trial.returncode for trial in trials] == [0, 0], outputs
    fetcher, waiter = sorted((json.loads(out) for out, _ in outputs), key=lambda r: -r["fetched"])

    assert fetcher["fetched"] == TRAIN_SHARDS + 1 and waiter["fetched"] == 0
    # They raced: the second asked while the first was still copying, and waited for it.
    assert waiter["started"] < fetcher["ended"] <= waiter["ended"]
    assert fetcher["path"] == waiter["path"]
    copy = Path(fetcher["path"])
    assert copy.parent == cache
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".")) == [".lock"]  # no temp left


def test_a_shard_changed_in_storage_is_refused_by_name_and_never_read(in_storage, cache):
    folder, uri = in_storage
    shard = folder / "train-00002.parquet"
    original = shard.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0xFF  # one pixel: same size, so only the checksum tells
    shard.write_bytes(bytes(changed))

    assert check_stored(uri)  # the driver's check reads no pixel; the copy is where it shows
    with pytest.raises(UserError) as refused:
        local_copy(uri)
    message = str(refused.value)
    assert message.startswith(f"{uri}/train-00002.parquet: sha256 ")
    assert "the manifest says" in message and "Fix: copy the dataset folder" in message
    [copy] = cache.iterdir()
    kept = sorted(p.name for p in copy.iterdir())
    assert kept == [".lock", "train-00000.parquet", "train-00001.parquet"]  # not it, no manifest

    shard.write_bytes(original)  # copied again: the fetch goes on from the verified shards
    assert local_copy(uri).fetched == TRAIN_SHARDS + 1 - 2


def test_a_copy_left_half_written_by_a_killed_trial_is_not_used(in_storage, cache):
    _, uri = in_storage
    copy = local_copy(uri).path
    (copy / MANIFEST).unlink()
    shard = copy / "val-00006.parquet"
    shard.rename(copy / ".val-00006.parquet.tmp-12345")  # what a killed fetch leaves
    again = local_copy(uri)
    assert again.fetched == 1 and again.path == copy
    assert not list(copy.glob(".*.tmp-*"))
    load_manifest(copy, verify_checksums=True)


@pytest.mark.parametrize("damage, expected", [
    ("no dataset", "{uri}: no manifest.json there, so it is no prepared dataset"),
    ("no shard", "{uri}/val-00006.parquet: listed in manifest.json but not in storage"),
    ("cut short", "{uri}/train-00000.parquet: 1000 bytes in storage, the manifest says"),
    ("no checksums", "{uri}/train-00000.parquet: manifest.json has no sha256 for it"),
])
def test_a_dataset_missing_or_incomplete_in_storage_is_refused_naming_it(in_storage, damage, expected):
    folder, uri = in_storage
    if damage == "no dataset":
        shutil.rmtree(folder)
    elif damage == "no shard":
        (folder / "val-00006.parquet").unlink()
    elif damage == "cut short":
        with open(folder / "train-00000.parquet", "r+b") as handle:
            handle.truncate(1000)
    else:
        manifest = json.loads((folder / MANIFEST).read_text())
        for info in manifest["splits"].values():
            for shard in info["shards"]:
                del shard["sha256"]
        (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="Fix:") as refused:
        check_stored(uri)
    assert str(refused.value).startswith(expected.format(uri=uri))


def test_a_workload_trains_on_its_node_s_copy_as_on_the_folder(prepared, in_storage, cache):
    _, uri = in_storage
    config = LinearClassifier.Config(batch_size=64, lr=0.01)
    batches = []
    for path in (str(prepared), uri):
        workload = LinearClassifier()
        workload.setup(config, WorkloadContext(seed=3, data={"path": path, "shuffle_buffer": 512}))
        batches.append(next(workload.data.train.batches(0)))
        assert workload.step()["val_top1"] >= 0
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert workload.data.train.path.parent == cache  # the stored one read from the cache


def test_run_refuses_a_missing_stored_dataset_before_making_anything(tmp_path, monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    missing = (tmp_path / "storage" / "datasets" / "nowhere").as_uri()
    (tmp_path / "job.yaml").write_text(
        f"name: stored-data\nworkload: sl.linear\ndata: {{path: '{missing}'}}\n"
        "stop: {iterations: 1}\n")
    with pytest.raises(UserError) as refused:
        api.run("job.yaml", num_cpus=1)
    assert f"data.path: {missing}: no manifest.json there" in str(refused.value)
    # Nothing half-made: no MLflow store, no ledger, no Tune state, nothing cached.
    assert not (tmp_path / ".runyard").exists() and not cache.exists()
