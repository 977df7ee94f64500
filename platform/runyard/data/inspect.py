"""`runyard data inspect DIR`: what a prepared dataset holds, before hours of training on it.

Checks the manifest against the shards, reports counts and class balance per split, and
renders a PNG grid with a few images of each of the first classes: look at what goes into
the net (the Recipe's first step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runyard.data.shards import load_manifest, read_shard


def summarize(directory: str | Path, verify_checksums: bool = False) -> dict[str, Any]:
    manifest = load_manifest(directory, verify_checksums=verify_checksums)
    summary: dict[str, Any] = {
        "path": str(directory), "image_shape": manifest["image_shape"],
        "classes": len(manifest["classes"]), "source": manifest["source"],
        "pixel_mean": manifest["pixel_mean"], "pixel_std": manifest["pixel_std"],
        "skipped": len(manifest["skipped"]), "splits": {},
    }
    for split, info in manifest["splits"].items():
        counts = np.asarray(info["class_counts"])
        summary["splits"][split] = {
            "images": info["count"], "shards": len(info["shards"]),
            "bytes": sum(s["bytes"] for s in info["shards"]),
            "per_class_min": int(counts.min()) if len(counts) else 0,
            "per_class_max": int(counts.max()) if len(counts) else 0,
            "per_class_mean": float(counts.mean()) if len(counts) else 0.0,
            "empty_classes": [manifest["classes"][c] for c in np.flatnonzero(counts == 0)],
        }
    return summary


def save_sample_grid(directory: str | Path, path: str | Path, split: str = "train",
                     classes: int = 10, per_class: int = 8) -> Path:
    """A PNG: one row per class (the first `classes`), `per_class` images from the first
    shards, labelled with the class name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest = load_manifest(directory)
    shape = tuple(manifest["image_shape"])
    wanted = min(classes, len(manifest["classes"]))
    picked: dict[int, list[np.ndarray]] = {c: [] for c in range(wanted)}
    for shard in manifest["splits"][split]["shards"]:
        images, labels = read_shard(Path(directory) / shard["file"], shape)
        for image, label in zip(images, labels):
            if label < wanted and len(picked[label]) < per_class:
                picked[label].append(image)
        if all(len(v) == per_class for v in picked.values()):
            break
    fig, axes = plt.subplots(wanted, per_class, figsize=(per_class * 1.1, wanted * 1.2),
                             squeeze=False)
    for label in range(wanted):
        for column in range(per_class):
            ax = axes[label, column]
            ax.axis("off")
            if column < len(picked[label]):
                ax.imshow(picked[label][column])
        axes[label, 0].set_title(manifest["class_names"][label], fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
