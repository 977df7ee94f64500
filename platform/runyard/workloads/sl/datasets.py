"""Datasets for the supervised workloads, selected by the spec's `data:` block.

`data: {source: digits}` is scikit-learn's 8x8 handwritten digits (1,797 real images that ship
with scikit-learn), split into train and validation by a seeded permutation, held in memory.

`data: {path: DIR, resident: false, shuffle_buffer: 65536, val_batches: null}` is a dataset
prepared by `runyard data prepare` (Parquet shards + manifest.json), read by
runyard.data.ShardLoader (see training.ShardData). DIR may be a URI of its copy in storage
(s3://, gs://, file://): each node reads its own verified copy (runyard.data.stored). resident: keep the rank's part of the split in
(GPU) memory; val_batches: evaluate on only that many validation batches per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runyard.workloads.lazy import lazy_module

torch = lazy_module("torch")  # only load_dataset needs it; spec checks import this module

SOURCES = ("digits",)


@dataclass(frozen=True)
class ArrayDataset:
    x_train: torch.Tensor  # float32, N x H x W x C, standardised with training statistics
    y_train: torch.Tensor  # int64, N
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C
    class_names: list[str]


SHARD_KEYS = {"path", "resident", "shuffle_buffer", "val_batches"}


def check_data(data: dict[str, Any] | None) -> list[str]:
    """Spec problems with a `data:` block, as `field: message` strings."""
    data = data or {}
    if "path" in data:
        return _check_shard_data(data)
    source = data.get("source", "digits")
    problems = []
    if source not in SOURCES:
        problems.append(f"data.source: unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    fraction = data.get("val_fraction", 0.2)
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        problems.append(f"data.val_fraction: expected a number between 0 and 1, found {fraction!r}")
    return problems


def _check_shard_data(data: dict[str, Any]) -> list[str]:
    problems = [f"data.{key}: unknown key for a prepared dataset; expected one of "
                f"{', '.join(sorted(SHARD_KEYS))}" for key in data if key not in SHARD_KEYS]
    if not isinstance(data["path"], str) or not data["path"]:
        problems.append(f"data.path: expected the folder written by `runyard data prepare`, "
                        f"found {data['path']!r}")
    if not isinstance(data.get("resident", False), bool):
        problems.append(f"data.resident: expected true or false, found {data['resident']!r}")
    buffer = data.get("shuffle_buffer", 65536)
    if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
        problems.append(f"data.shuffle_buffer: expected a positive number of images, found {buffer!r}")
    val_batches = data.get("val_batches")
    if val_batches is not None and (not isinstance(val_batches, int) or val_batches < 1):
        problems.append(f"data.val_batches: expected a positive integer or null, found {val_batches!r}")
    return problems


def check_data_inputs(data: dict[str, Any] | None) -> list[str]:
    """Machine-dependent problems: a prepared-data path that is missing or broken here, or a
    dataset in storage (a URI) that is missing or incomplete there. The driver checks this
    before any trial starts; on a cluster that is the submitted driver, so the laptop needs
    no access to the storage."""
    data = data or {}
    if "path" not in data:
        return []
    from runyard.data import check_dataset
    from runyard.errors import UserError

    try:
        check_dataset(data["path"])
    except UserError as error:
        return [f"data.path: {error}"]
    return []


def load_dataset(data: dict[str, Any] | None, seed: int) -> ArrayDataset:
    data = data or {}
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # N x 8 x 8 x 1, values 0..16
    labels = digits.target.astype(np.int64)
    # The split depends on the data seed only, never on the trial seed, so every trial of a
    # sweep is scored on the same validation images.
    order = np.random.default_rng(data.get("split_seed", 0)).permutation(len(labels))
    n_val = int(round(len(labels) * data.get("val_fraction", 0.2)))
    val, train = order[:n_val], order[n_val:]
    mean, std = images[train].mean(), images[train].std()
    standardise = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return ArrayDataset(
        x_train=standardise(images[train]),
        y_train=torch.from_numpy(labels[train]),
        x_val=standardise(images[val]),
        y_val=torch.from_numpy(labels[val]),
        num_classes=10,
        image_shape=(8, 8, 1),
        class_names=[str(d) for d in range(10)],
    )
