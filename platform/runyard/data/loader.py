"""ShardLoader: batches of raw uint8 images from a prepared dataset, for one DDP rank.

An epoch is planned before any pixel is read, from (seed, epoch) alone:

1. rank split: the split's rows, in file order, are cut into `world_size` contiguous, equal
   parts, the same in every epoch (the last few rows, fewer than world_size, are dropped in
   training so that every rank runs the same number of steps). A rank only ever reads its own
   ~1/world of the data, streamed or resident, so 8 resident ranks hold the split once
   between them, not 8 times; every epoch the ranks together see each kept row once.
   Preparation shuffled the images before sharding, so every part is a random ~1/world.
2. shard order: a seeded permutation, new every epoch, of the rank's pieces of shards
   (training); file order otherwise;
3. shuffle buffer: the rank's rows stream through a buffer of `shuffle_buffer` slots; each new
   row replaces a uniformly chosen slot, whose row is emitted (the reservoir shuffle of
   tf.data/Ray Data). The buffer holds row *indices*, not pixels: a shard's pixels are
   memory-mapped straight from its file (shards.read_shard), so any row is one gather away
   and a batch costs exactly one copy.

Because the plan is indices only, resuming mid-epoch is exact and free: `batches(epoch,
start=k)` skips k planned batches without reading them. The same plan drives the resident
mode, where the rank's part sits in one tensor (on the GPU if asked) and a batch is an
index_select, so resident and streamed runs see identical batches.

Batches are (images uint8 N x H x W x 3, labels int64 N) torch tensors; the consumer
normalises on its device, where that is cheap (see `Normalizer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from runyard.data.shards import load_manifest, read_shard
from runyard.errors import UserError


def rank_bounds(shard_counts: list[int], rank: int, world_size: int,
                drop_last: bool) -> tuple[int, int]:
    """[first, last) of this rank's part of the split, as row numbers in file order."""
    total = sum(shard_counts)
    if drop_last:
        per_rank = total // world_size
        return rank * per_rank, (rank + 1) * per_rank
    # evaluation: every example exactly once, parts differ by at most one
    return rank * total // world_size, (rank + 1) * total // world_size


def plan_epoch(shard_counts: list[int], *, batch_size: int, seed: int, epoch: int, shuffle: bool,
               shuffle_buffer: int, rank: int, world_size: int,
               drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """This rank's (shard index, row) per example, in emission order, cut to whole batches
    when drop_last. Pure function of its arguments."""
    first, last = rank_bounds(shard_counts, rank, world_size, drop_last)
    starts = np.concatenate([[0], np.cumsum(shard_counts)]).astype(np.int64)
    # The rank's piece of each shard it overlaps: rows [begin, end) of that shard.
    pieces = [(s, max(first, starts[s]) - starts[s], min(last, starts[s + 1]) - starts[s])
              for s in range(len(shard_counts)) if min(last, starts[s + 1]) > max(first, starts[s])]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(pieces)) if shuffle else np.arange(len(pieces))
    shard_ids = np.concatenate([np.full(pieces[p][2] - pieces[p][1], pieces[p][0], np.int32)
                                for p in order] or [np.zeros(0, np.int32)])
    rows = np.concatenate([np.arange(pieces[p][1], pieces[p][2], dtype=np.int64) for p in order]
                          or [np.zeros(0, np.int64)])
    if shuffle:
        emitted = _reservoir_shuffle(len(rows), shuffle_buffer, np.random.default_rng([seed, epoch, rank, 1]))
        shard_ids, rows = shard_ids[emitted], rows[emitted]
    if drop_last:
        keep = len(rows) // batch_size * batch_size
        shard_ids, rows = shard_ids[:keep], rows[:keep]
    # Within each batch, order rows by shard, then row (order inside a batch does not matter
    # to SGD): the reader fills a batch with one gather per shard, reading forward in memory.
    grouped = np.lexsort((rows, shard_ids, np.arange(len(rows)) // batch_size))
    return shard_ids[grouped], rows[grouped]


def _reservoir_shuffle(count: int, capacity: int, rng: np.random.Generator, chunk: int = 1024) -> np.ndarray:
    """Emission order of a shuffle buffer of `capacity` slots over positions 0..count-1."""
    capacity = max(1, min(capacity, count))
    chunk = min(chunk, capacity)  # a chunk evicts distinct slots
    buffer = np.arange(capacity)
    out = [np.zeros(0, np.int64)]
    for start in range(capacity, count, chunk):
        incoming = np.arange(start, min(start + chunk, count))
        slots = rng.choice(capacity, size=len(incoming), replace=False)
        out.append(buffer[slots].copy())  # each new row evicts a random slot's row
        buffer[slots] = incoming
    out.append(rng.permutation(buffer) if count else np.zeros(0, np.int64))
    return np.concatenate(out)


class ShardLoader:
    """Iterate one split of a prepared dataset for one DDP rank.

    batch_size: examples per batch on this rank (the global batch is batch_size*world_size).
    shuffle: seeded shard order + shuffle buffer (training); off: file order (evaluation).
    drop_last: defaults to `shuffle`; keeps every rank at the same number of steps.
    resident: load this rank's part of the split once into `device` memory (a 64x64 ImageNet
        train split is 15.7 GB in all: fine on an 80 GB GPU, 2 GB per rank on 8); otherwise
        stream its shards from disk.
    """

    def __init__(self, path: str | Path, split: str = "train", batch_size: int = 256, *,
                 shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 65536, drop_last: bool | None = None,
                 resident: bool = False, device: str | torch.device = "cpu",
                 pin_memory: bool = False, manifest: dict | None = None):
        self.path = Path(path)
        self.manifest = manifest if manifest is not None else load_manifest(self.path)
        if split not in self.manifest["splits"]:
            raise UserError(f"{self.path}: no split {split!r}; it has {sorted(self.manifest['splits'])}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.drop_last = shuffle if drop_last is None else drop_last
        self.device, self.pin_memory = torch.device(device), pin_memory
        self.shards = self.manifest["splits"][split]["shards"]
        self.counts = [shard["count"] for shard in self.shards]
        self.image_shape = tuple(self.manifest["image_shape"])
        self.num_classes = len(self.manifest["classes"])
        self.class_names = list(self.manifest["class_names"])
        self.epoch = 0
        self.resident = resident
        if resident:
            first, last = rank_bounds(self.counts, rank, world_size, self.drop_last)
            self._resident_images, self._resident_labels = self._load_rows(first, last)
            # A planned (shard, row) is resident row offsets[shard] + row.
            self._offsets = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64) - first

    def __len__(self) -> int:
        return self.num_batches

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch (what plan_epoch keeps, without planning)."""
        total = sum(self.counts)
        if self.drop_last:
            return total // self.world_size // self.batch_size * self.batch_size
        return (self.rank + 1) * total // self.world_size - self.rank * total // self.world_size

    @property
    def num_batches(self) -> int:
        count = self.num_examples
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(self.epoch)

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return plan_epoch(self.counts, batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                          shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer,
                          rank=self.rank, world_size=self.world_size, drop_last=self.drop_last)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch` for this rank, from batch index `start` on."""
        shard_ids, rows = self._plan(epoch)
        starts = range(start * self.batch_size, len(rows), self.batch_size)
        if self.resident:
            global_rows = torch.from_numpy(self._offsets[shard_ids] + rows).to(self.device)
            for first in starts:
                index = global_rows[first : first + self.batch_size]
                if self.device.type == "cpu":  # numpy's row gather is ~30x torch's for uint8
                    images = torch.empty((len(index), *self.image_shape), dtype=torch.uint8)
                    np.take(self._resident_images.numpy(), index.numpy(), axis=0,
                            out=images.numpy(), mode="clip")
                    yield images, self._resident_labels[index]
                else:
                    yield (self._resident_images.index_select(0, index),
                           self._resident_labels.index_select(0, index))
            return
        yield from self._stream(shard_ids, rows, starts)

    def _stream(self, shard_ids: np.ndarray, rows: np.ndarray, starts: range):
        # The batch after which each shard is no longer needed, so it can be released.
        batch_of = np.arange(len(rows)) // self.batch_size
        last_use = np.full(len(self.shards), -1)
        np.maximum.at(last_use, shard_ids, batch_of)
        decoded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for first in starts:
            ids, picks = shard_ids[first : first + self.batch_size], rows[first : first + self.batch_size]
            images = torch.empty((len(ids), *self.image_shape), dtype=torch.uint8,
                                 pin_memory=self.pin_memory)
            labels = torch.empty(len(ids), dtype=torch.int64)
            image_out, label_out = images.numpy(), labels.numpy()
            boundaries = np.flatnonzero(np.diff(ids)) + 1  # the plan grouped rows by shard
            for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(ids)]):
                shard = int(ids[lo])
                if shard not in decoded:
                    decoded[shard] = read_shard(self.path / self.shards[shard]["file"], self.image_shape)
                shard_images, shard_labels = decoded[shard]
                # mode="clip" (rows are valid by construction) lets numpy gather straight
                # into `out`; the default mode buffers the whole result first.
                np.take(shard_images, picks[lo:hi], axis=0, out=image_out[lo:hi], mode="clip")
                np.take(shard_labels, picks[lo:hi], out=label_out[lo:hi], mode="clip")
            batch_index = first // self.batch_size
            for shard in [s for s in decoded if last_use[s] <= batch_index]:
                del decoded[shard]
            yield images.to(self.device, non_blocking=self.pin_memory), labels.to(self.device)

    def _load_rows(self, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [first, last) of the split (file order) in one tensor on the device."""
        images = torch.empty((last - first, *self.image_shape), dtype=torch.uint8, device=self.device)
        labels = torch.empty(last - first, dtype=torch.int64, device=self.device)
        shard_start = 0
        for shard, count in zip(self.shards, self.counts):
            begin, end = max(first, shard_start), min(last, shard_start + count)
            if end > begin:
                shard_images, shard_labels = read_shard(self.path / shard["file"], self.image_shape)
                piece = slice(begin - shard_start, end - shard_start)
                images[begin - first : end - first].copy_(torch.from_numpy(shard_images[piece].copy()))
                labels[begin - first : end - first] = torch.from_numpy(shard_labels[piece])
            shard_start += count
        return images, labels


class Normalizer(torch.nn.Module):
    """uint8 N x H x W x 3 -> float N x 3 x H x W, (x - mean) / std per channel, on the
    batch's device. mean/std in 0..255 units (the manifest's pixel_mean/pixel_std); pass
    std of ones to only center the pixels, as the linear-classifier seed did."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def hwc(self, images: torch.Tensor) -> torch.Tensor:
        """float N x H x W x 3 (pixel order of the stored images; what a linear model flattens)."""
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # A permuted view of N x H x W x 3 memory is already channels-last N x 3 x H x W.
        return self.hwc(images).permute(0, 3, 1, 2)
