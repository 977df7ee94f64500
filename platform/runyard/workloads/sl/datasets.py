"""Datasets for the supervised workloads, selected by the spec's `data:` block (its two
forms, keys and defaults are runyard.workloads.blocks.DigitsData and ShardsData).

`data: {source: digits}` is scikit-learn's 8x8 handwritten digits (1,797 real images that ship
with scikit-learn), split into train and validation by a seeded permutation, held in memory.

`data: {path: DIR}` is a dataset prepared by `runyard data prepare` (Parquet shards +
manifest.json), read by runyard.data.ShardLoader (see training.ShardData). DIR may be a URI
of its copy in storage (s3://, gs://, file://): each node reads its own verified copy
(runyard.data.stored).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from runyard.workloads.blocks import DigitsData, ShardsData
from runyard.workloads.lazy import lazy_module

torch = lazy_module("torch")  # only loading the data needs it; spec checks import this module


@dataclass(frozen=True)
class ArrayDataset:
    x_train: torch.Tensor  # float32, N x H x W x C, standardised with training statistics
    y_train: torch.Tensor  # int64, N
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int]  # H, W, C
    class_names: list[str]


def check_data_inputs(data: DigitsData | ShardsData | None) -> list[str]:
    """Machine-dependent problems: a prepared-data path that is missing or broken here, or a
    dataset in storage (a URI) that is missing or incomplete there. The driver checks this
    before any trial starts; on a cluster that is the submitted driver, so the laptop needs
    no access to the storage."""
    if not isinstance(data, ShardsData):
        return []
    from runyard.data import check_dataset
    from runyard.errors import UserError

    try:
        check_dataset(data.path)
    except UserError as error:
        return [f"data.path: {error}"]
    return []


def load_dataset(data: DigitsData | None) -> ArrayDataset:
    """The digits, split and standardised as the `data:` block says (its defaults if None)."""
    data = data or DigitsData()
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # N x 8 x 8 x 1, values 0..16
    labels = digits.target.astype(np.int64)
    # The split depends on the data seed only, never on the trial seed, so every trial of a
    # sweep is scored on the same validation images.
    order = np.random.default_rng(data.split_seed).permutation(len(labels))
    n_val = int(round(len(labels) * data.val_fraction))
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


class ArrayLoader:
    """One split of an in-memory dataset, batched as runyard.data.ShardLoader batches a
    prepared one, by the same epoch plan (runyard.data.plan_epoch, the array as one shard):
    a training split reshuffled every epoch from (seed, epoch) alone, so a checkpoint resumes
    mid-epoch from its cursor, and each DDP rank its own part. The last batch may be smaller."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        from runyard.data.loader import rank_bounds

        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        first, last = rank_bounds([len(labels)], rank, world_size, drop_last=False)
        self.num_examples = last - first

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from runyard.data import plan_epoch

        _, rows = plan_epoch([len(self.labels)], batch_size=self.batch_size, seed=self.seed,
                             epoch=epoch, shuffle=self.shuffle, shuffle_buffer=len(self.labels),
                             rank=self.rank, world_size=self.world_size, drop_last=False)
        rows = torch.from_numpy(rows)
        for first in range(start * self.batch_size, len(rows), self.batch_size):
            batch = rows[first:first + self.batch_size]
            yield self.images[batch], self.labels[batch]


@dataclass(frozen=True)
class DigitsSplits:
    """The digits in the shape of training.ShardData (train and val loaders, a normalizer,
    what the classes are), so sl.linear trains on either without branching."""

    train: ArrayLoader
    val: ArrayLoader
    normalize: Any  # a runyard.data.Normalizer; the identity, load_dataset standardised already
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: list[str]
    val_batches: int | None = None  # evaluate on every validation batch


def digits_splits(data: DigitsData | None, seed: int, global_batch_size: int, rank: int = 0,
                  world_size: int = 1) -> DigitsSplits:
    """Loaders over the digits for this rank; the global batch is split over the ranks."""
    from runyard.data import Normalizer

    digits = load_dataset(data)
    per_rank = max(1, global_batch_size // world_size)
    channels = digits.image_shape[-1]
    return DigitsSplits(
        train=ArrayLoader(digits.x_train, digits.y_train, per_rank, shuffle=True, seed=seed,
                          rank=rank, world_size=world_size),
        val=ArrayLoader(digits.x_val, digits.y_val, per_rank, shuffle=False, rank=rank,
                        world_size=world_size),
        normalize=Normalizer([0.0] * channels, [1.0] * channels),
        num_classes=digits.num_classes, image_shape=digits.image_shape,
        class_names=digits.class_names)
