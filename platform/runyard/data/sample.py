"""A bounded, class-balanced sample of a prepared split, for checks that must not load it all.

Preflight needs a few examples of every class, not 15.7 GB of pixels: shards are read in file
order through their memory maps (shards.read_shard), only the rows still needed are copied,
and reading stops as soon as every class has its share or `max_read` rows have been looked at.
Preparation shuffles every split before sharding, so the first shards already mix the classes
and ImageNet needs about one shard for a couple of examples of each of its 1000 classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runyard.data.shards import load_manifest, read_shard


def take_per_class(labels: np.ndarray, per_class: int, num_classes: int,
                   already: np.ndarray | None = None) -> np.ndarray:
    """Indices (in order) of the first rows of each class, up to `per_class` per class
    counting the `already` taken ones."""
    already = np.zeros(num_classes, np.int64) if already is None else already
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first_of_class = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = np.arange(len(labels)) - first_of_class
    keep = order[rank_in_class + already[sorted_labels] < per_class]
    return np.sort(keep)


def class_balanced_sample(directory: str | Path, split: str, per_class: int, *,
                          manifest: dict | None = None,
                          max_read: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_class` images of every class of `split` as (N x H x W x 3 uint8, N int64),
    in file order. Reads at most `max_read` rows (default: 16 x per_class x classes)."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else load_manifest(directory)
    num_classes = len(manifest["classes"])
    shape = tuple(manifest["image_shape"])
    available = np.asarray(manifest["splits"][split]["class_counts"], np.int64)
    wanted = np.minimum(available, per_class)
    budget = max_read if max_read is not None else 16 * per_class * num_classes
    taken = np.zeros(num_classes, np.int64)
    images, labels = [], []
    for shard in manifest["splits"][split]["shards"]:
        if budget <= 0 or (taken >= wanted).all():
            break
        shard_images, shard_labels = read_shard(directory / shard["file"], shape)
        rows = min(len(shard_labels), budget)
        keep = take_per_class(shard_labels[:rows], per_class, num_classes, taken)
        images.append(np.take(shard_images, keep, axis=0))  # copies only the kept rows
        labels.append(shard_labels[keep])
        taken += np.bincount(shard_labels[keep], minlength=num_classes)
        budget -= rows
    if not labels:
        return np.zeros((0, *shape), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels)
