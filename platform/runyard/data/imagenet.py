"""`runyard data prepare imagenet`: an ImageNet-style folder tree -> Parquet shards.

Input layout (the ILSVRC-2012 release as most labs unpack it):

    SRC/train/<wnid>/*.JPEG            one folder per class; the sorted folder names are the
                                       classes, in label order (label 0 = first wnid)
    SRC/val/<wnid>/*.JPEG              validation as a folder tree, or
    SRC/val/*.JPEG + a labels file     flat, with --val-labels FILE (or SRC/LOC_val_solution.csv):
                                       Kaggle's CSV `ImageId,PredictionString` (first token of
                                       the prediction string is the wnid) or lines `FILE WNID`

Every image is decoded, converted to RGB (ImageNet holds some CMYK and grayscale JPEGs),
resized so its shorter side is `size`, and center-cropped to size x size. Files are shuffled
with a fixed seed before sharding, so every shard holds a mix of classes.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from runyard.data import shards
from runyard.data.progress import run_jobs
from runyard.errors import UserError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_tree(src: Path, val_labels: Path | None) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Classes (sorted wnids) and, per split, (file relative to src, label) pairs."""
    train_dir = src / "train"
    if not train_dir.is_dir():
        raise UserError(f"{train_dir}: no such folder. `prepare imagenet` expects SRC/train/<wnid>/"
                        "*.JPEG and SRC/val/...; Fix: pass the folder that contains train/ and val/.")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{train_dir}: holds no class folders. Fix: put one folder per class "
                        "(named by its wnid, e.g. n01440764) with that class's images in it.")
    index = {wnid: label for label, wnid in enumerate(classes)}
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for wnid in classes:
        images = _images_in(train_dir / wnid)
        if not images:
            raise UserError(f"{train_dir / wnid}: empty class folder (no .JPEG/.jpg/.png files). "
                            "Fix: add its images, or delete the folder if the class is not wanted.")
        files["train"] += [(str(p.relative_to(src)), index[wnid]) for p in images]

    val_dir = src / "val"
    if not val_dir.is_dir():
        raise UserError(f"{val_dir}: no such folder. Fix: add the validation images as "
                        "val/<wnid>/*.JPEG or as val/*.JPEG with --val-labels FILE.")
    val_classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir())
    if val_labels is None and (src / "LOC_val_solution.csv").exists() and not val_classes:
        val_labels = src / "LOC_val_solution.csv"
    if val_labels is not None:
        files["val"] = _val_from_labels_file(src, val_dir, val_labels, index)
    else:
        if not val_classes:
            raise UserError(f"{val_dir}: flat validation folder but no labels file. Fix: pass "
                            "--val-labels LOC_val_solution.csv (or a file of `FILE WNID` lines).")
        for wnid in val_classes:
            if wnid not in index:
                raise UserError(f"{val_dir / wnid}: class {wnid!r} has no training folder in "
                                f"{train_dir}. Fix: remove it or add train/{wnid}/.")
            images = _images_in(val_dir / wnid)
            if not images:
                raise UserError(f"{val_dir / wnid}: empty class folder. Fix: add its "
                                "validation images or delete the folder.")
            files["val"] += [(str(p.relative_to(src)), index[wnid]) for p in images]
    return classes, files


def _val_from_labels_file(src: Path, val_dir: Path, labels_file: Path,
                          index: dict[str, int]) -> list[tuple[str, int]]:
    if not labels_file.exists():
        raise UserError(f"--val-labels {labels_file}: no such file.")
    by_stem = {p.stem: p for p in _images_in(val_dir)}
    pairs: list[tuple[str, str]] = []
    with open(labels_file, newline="") as handle:
        first = handle.readline()
        handle.seek(0)
        if first.startswith("ImageId,"):  # Kaggle LOC_val_solution.csv
            pairs = [(row["ImageId"], row["PredictionString"].split()[0])
                     for row in csv.DictReader(handle)]
        else:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise UserError(f"{labels_file}:{number}: expected `FILE WNID`, found {line!r}.")
                pairs.append((Path(fields[0]).stem, fields[1]))
    result = []
    for stem, wnid in pairs:
        if stem not in by_stem:
            raise UserError(f"{labels_file}: lists {stem!r}, which is not an image in {val_dir}. "
                            "Fix: pass the labels file that belongs to this validation folder.")
        if wnid not in index:
            raise UserError(f"{labels_file}: {stem!r} is labelled {wnid!r}, which has no training "
                            "folder. Fix: check that train/ and the labels file are the same release.")
        result.append((str(by_stem[stem].relative_to(src)), index[wnid]))
    unlabelled = len(by_stem) - len(result)
    if unlabelled:
        raise UserError(f"{labels_file}: {unlabelled} image(s) in {val_dir} have no label. Fix: "
                        "complete the labels file or remove those images.")
    return sorted(result)


def decode_resize_crop(path: Path, size: int) -> np.ndarray:
    """size x size x 3 uint8: shorter side resized to `size` (antialiased), then center crop."""
    from PIL import Image

    with Image.open(path) as image:
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when that still covers `size`:
        # several times faster on full-size ImageNet photos, same result after resizing.
        image.draft("RGB", (size, size))
        image = image.convert("RGB")
        width, height = image.size
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def write_image_shard(src: str, out_dir: str, file: str, split: str, items: list[tuple[str, int]],
                      size: int, num_classes: int, skip_corrupt: bool) -> shards.ShardReceipt:
    """Decode `items` and write them as one shard (runs in a worker process)."""
    images, labels, skipped = [], [], []
    for relative, label in items:
        path = Path(src) / relative
        try:
            images.append(decode_resize_crop(path, size))
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, bomb errors
            reason = f"{type(error).__name__}: {error}"
            if not skip_corrupt:
                raise UserError(
                    f"{path}: cannot be decoded as an image ({reason}). Fix: replace or delete "
                    "the file, or rerun with --skip-corrupt to leave it out (it is then listed "
                    "under `skipped` in manifest.json). Finished shards are kept; the rerun "
                    "continues where this one stopped.") from None
            skipped.append({"file": relative, "reason": reason})
            continue
        labels.append(label)
    array = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return shards.write_shard(Path(out_dir), file, split, array, np.asarray(labels, np.int64),
                              num_classes, skipped)


def prepare_imagenet(src: str | Path, out: str | Path, size: int = 64, *,
                     val_labels: str | Path | None = None, workers: int = 4,
                     shard_mb: float = 256.0, images_per_shard: int | None = None,
                     skip_corrupt: bool = False, overwrite: bool = False) -> dict:
    """Prepare (or finish preparing) SRC into OUT; returns the manifest."""
    src, out = Path(src).resolve(), Path(out)
    if size < 8:
        raise UserError(f"--size {size}: too small; use the side length in pixels, e.g. 64.")
    classes, files = list_tree(src, Path(val_labels) if val_labels else None)
    per_shard = images_per_shard or shards.rows_per_shard(size, size, shard_mb)
    rng = np.random.default_rng(0)
    jobs_by_file: list[tuple[str, str, list[tuple[str, int]]]] = []
    for split in shards.SPLITS:
        items = [files[split][i] for i in rng.permutation(len(files[split]))]
        for number, start in enumerate(range(0, len(items), per_shard)):
            jobs_by_file.append((f"{split}-{number:05d}.parquet", split,
                                 items[start : start + per_shard]))
    plan = {"kind": "imagenet-folder", "src": str(src), "size": size,
            "skip_corrupt": skip_corrupt, "classes": classes,
            # A digest, not the listing: ImageNet's listing is tens of megabytes.
            "shards_sha256": hashlib.sha256(json.dumps(jobs_by_file).encode()).hexdigest()}
    shards.start_plan(out, plan, overwrite)

    receipts, jobs = [], []
    for file, split, items in jobs_by_file:
        receipt = shards.read_receipt(out, file)
        if receipt is not None:
            receipts.append(receipt)
        else:
            jobs.append((write_image_shard, (str(src), str(out), file, split, items, size,
                                             len(classes), skip_corrupt), len(items)))
    if receipts:
        print(f"resuming: {len(receipts)} of {len(jobs_by_file)} shards already written", flush=True)
    receipts += run_jobs(jobs, workers, f"prepare {src.name} -> {size}x{size}")
    source = {"kind": "imagenet-folder", "src": str(src), "size": size}
    return shards.write_manifest(out, receipts, classes, classes, (size, size, 3), source)
