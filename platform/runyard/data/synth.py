"""`runyard data synth`: a small JPEG tree in the exact ImageNet layout, for tests and demos.

Class k is a sinusoidal grating at orientation pi*k/K (and, past 8 classes, one of two spatial
frequencies), with a random phase, a random colour tint, random contrast and pixel noise.
Every class has the same mean image and the same colour statistics, because the phase is
uniform: a linear classifier on pixels can only carve out arcs of each class's phase circle
and stays far from perfect, while a ConvNet, whose filters respond to orientation wherever
the stripes fall, separates the classes. The photos have
varied non-square sizes, so resizing and center-cropping are exercised as on real ImageNet.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from runyard.errors import UserError


def wnid(label: int) -> str:
    """A made-up WordNet id (real ones look like n01440764)."""
    return f"n9{label:07d}"


def grating(rng: np.random.Generator, label: int, classes: int, height: int, width: int) -> np.ndarray:
    angle = np.pi * (label % 8 if classes > 8 else label) / min(classes, 8)
    cycles_per_pixel = (0.06, 0.14)[label // 8 % 2] if classes > 8 else 0.08
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    # Frequency is per pixel of a 64-pixel image, so the pattern survives the resize to 64.
    scale = 64.0 / min(height, width)
    wave = np.sin(2 * np.pi * cycles_per_pixel * scale * (x * np.cos(angle) + y * np.sin(angle))
                  + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(0.3, 1.0, size=3)
    contrast = rng.uniform(50, 110)
    image = 128 + contrast * wave[..., None] * tint + rng.normal(0, 20, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_imagenet(out: str | Path, classes: int = 10, train_per_class: int = 100,
                             val_per_class: int = 20, seed: int = 0, min_side: int = 72,
                             max_side: int = 128, val_layout: str = "folders") -> Path:
    """Write OUT/train/<wnid>/*.JPEG and OUT/val/... ; returns OUT.

    val_layout: "folders" (val/<wnid>/*.JPEG) or "flat" (val/*.JPEG plus
    OUT/LOC_val_solution.csv, as in Kaggle's ImageNet release)."""
    from PIL import Image

    if classes < 2:
        raise UserError(f"--classes {classes}: a classifier needs at least 2 classes.")
    if val_layout not in ("folders", "flat"):
        raise UserError(f"--val-layout {val_layout!r}: expected 'folders' or 'flat'.")
    out = Path(out)
    rng = np.random.default_rng(seed)
    solution = []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            folder = out / split / (wnid(label) if split == "train" or val_layout == "folders" else "")
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                height, width = rng.integers(min_side, max_side + 1, size=2)
                pixels = grating(rng, label, classes, int(height), int(width))
                if split == "train":
                    name = f"{wnid(label)}_{index}.JPEG"
                else:
                    name = f"ILSVRC2012_val_{label * per_class + index + 1:08d}.JPEG"
                    solution.append((name.removesuffix(".JPEG"), wnid(label)))
                Image.fromarray(pixels).save(folder / name, quality=90)
    if val_layout == "flat":
        with open(out / "LOC_val_solution.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ImageId", "PredictionString"])
            for image_id, class_id in solution:
                writer.writerow([image_id, f"{class_id} 0 0 10 10"])
    return out
