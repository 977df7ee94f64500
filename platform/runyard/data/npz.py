"""`runyard data prepare imagenet64-npz`: the downsampled-ImageNet release -> Parquet shards.

The release (Chrabaszcz, Loshchilov & Hutter 2017: Imagenet64x64, also 32x32 and 16x16) is a
folder of npz files:

    train_data_batch_1.npz ... train_data_batch_10.npz     (the .npz suffix may be missing)
    val_data.npz

each with `data`: N x (3*S*S) uint8, one image per row stored as the whole R plane, then the G
plane, then the B plane (each S x S row-major), and `labels`: N integers 1..1000. We reorder
pixels to S x S x RGB and shift labels to 0..999. The class order is the release's label order;
pass --class-map map_clsloc.txt (lines `WNID LABEL NAME`) to name classes by wnid.
"""

from __future__ import annotations

import math
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from runyard.data import shards
from runyard.data.progress import run_jobs
from runyard.errors import UserError


def find_batches(src: Path) -> dict[str, list[Path]]:
    def number(path: Path) -> int:
        return int(re.search(r"(\d+)(\.npz)?$", path.name).group(1))

    train = sorted((p for p in src.glob("train_data_batch_*")
                    if re.fullmatch(r"train_data_batch_\d+(\.npz)?", p.name)), key=number)
    val = [p for p in (src / "val_data.npz", src / "val_data") if p.exists()][:1]
    if not train or not val:
        raise UserError(f"{src}: expected train_data_batch_1.npz ... and val_data.npz (the "
                        f"downsampled-ImageNet release); found {'no train batches' if not train else 'no val_data'}. "
                        "Fix: pass the folder where you unpacked the release.")
    return {"train": train, "val": val}


def _data_member(path: Path) -> tuple[tuple[int, ...], np.dtype, int | None]:
    """Shape and dtype of the `data` array from its .npy header alone, and the file offset of
    its values when the member is stored uncompressed (np.savez) so they can be mapped."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("data.npy")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            # Formats 2 and 3 share the header layout (a 4-byte length); 1 has a 2-byte one.
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(member)
            header_bytes = member.tell()
        if fortran or info.compress_type != zipfile.ZIP_STORED:
            return shape, dtype, None
        with open(path, "rb") as handle:  # the local file header: 30 bytes + name + extra
            handle.seek(info.header_offset)
            local = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        return shape, dtype, info.header_offset + 30 + name_length + extra_length + header_bytes


def load_batch(path: Path, load_data: bool = True) -> tuple[np.ndarray | None, np.ndarray, int]:
    """(images N x S x S planar uint8 rows or None, labels 0-based int64, side S), with checks.

    Only the labels and the data's header are read here; the data itself is memory-mapped
    when the npz stores it uncompressed (the release does), so each shard written from it
    reads its own rows once; a compressed npz is decompressed once."""
    try:
        with np.load(path, allow_pickle=False) as batch:
            if "labels" not in batch.files or "data" not in batch.files:
                raise UserError(f"{path}: has keys {batch.files}; expected 'data' and 'labels'. "
                                "Fix: pass the npz files of the downsampled-ImageNet release.")
            labels = np.asarray(batch["labels"]).astype(np.int64).ravel()
            shape, dtype, offset = _data_member(path)
            data = None
            if load_data:
                data = (np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
                        if offset is not None else batch["data"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise UserError(f"{path}: cannot be read as npz ({error}). Fix: download or unpack "
                        "that file again.") from None
    width = shape[1] if len(shape) == 2 else -1
    side = math.isqrt(max(width, 0) // 3)
    if dtype != np.uint8 or len(shape) != 2 or shape[0] != len(labels):
        raise UserError(f"{path}: data is {dtype} {shape} with {len(labels)} labels; expected "
                        "N x 3*S*S uint8 and N labels.")
    if width != 3 * side * side:
        raise UserError(f"{path}: rows have {width} values; expected 3*S*S (12288 for 64x64).")
    if len(labels) and labels.min() < 1:
        raise UserError(f"{path}: labels start at {labels.min()}; the release numbers classes "
                        "1..1000. Fix: pass the original files (we shift labels to 0..999).")
    return data, labels - 1, side


def planar_to_hwc(rows: np.ndarray, side: int) -> np.ndarray:
    """The release's rows (R plane, G plane, B plane) as N x S x S x RGB."""
    return np.ascontiguousarray(rows.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))


def write_batch_shards(path: str, out_dir: str, split: str, files: list[str],
                       per_shard: int, num_classes: int) -> list[shards.ShardReceipt]:
    """Convert one npz batch into its shards, skipping shards already written (a worker job).
    One shard's rows are in memory at a time."""
    data, labels, side = load_batch(Path(path))
    receipts = []
    for number, file in enumerate(files):
        receipt = shards.read_receipt(Path(out_dir), file)
        if receipt is None:
            rows = slice(number * per_shard, (number + 1) * per_shard)
            receipt = shards.write_shard(Path(out_dir), file, split, planar_to_hwc(data[rows], side),
                                         labels[rows], num_classes)
        receipts.append(receipt)
    return receipts


def read_class_map(path: Path, num_classes: int) -> list[str]:
    names: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit():
            raise UserError(f"{path}:{number}: expected `WNID LABEL [NAME]`, found {line!r}.")
        names[int(fields[1]) - 1] = fields[0]
    missing = [label + 1 for label in range(num_classes) if label not in names]
    if missing:
        raise UserError(f"{path}: no entry for label(s) {missing[:10]}. Fix: pass map_clsloc.txt "
                        "from the release that matches these npz files.")
    return [names[label] for label in range(num_classes)]


def prepare_imagenet64_npz(src: str | Path, out: str | Path, *, class_map: str | Path | None = None,
                           workers: int = 2, shard_mb: float = 256.0,
                           images_per_shard: int | None = None, overwrite: bool = False) -> dict:
    src, out = Path(src).resolve(), Path(out)
    batches = find_batches(src)
    # Labels and the data's header only, to plan shard names and find the class count; the
    # pixels are read once, by the worker that writes their shards.
    counts, sides, top_label = {}, set(), 0
    for split, paths in batches.items():
        for path in paths:
            _, labels, side = load_batch(path, load_data=False)
            counts[path], top_label = len(labels), max(top_label, int(labels.max(initial=-1)))
            sides.add(side)
    if len(sides) != 1:
        raise UserError(f"{src}: batches of different image sizes {sorted(sides)}. Fix: keep one "
                        "resolution of the release per folder.")
    side = sides.pop()
    num_classes = top_label + 1
    classes = (read_class_map(Path(class_map), num_classes) if class_map
               else [str(label + 1) for label in range(num_classes)])
    per_shard = images_per_shard or shards.rows_per_shard(side, side, shard_mb)

    plan_jobs = []
    for split, paths in batches.items():
        for path in paths:
            stem = path.name.removesuffix(".npz").replace("train_data_batch_", "batch")
            files = [f"{split}-{stem}-{n:03d}.parquet"
                     for n in range(-(-counts[path] // per_shard))]
            plan_jobs.append((str(path), split, files))
    plan = {"kind": "imagenet-npz", "src": str(src), "side": side, "classes": classes,
            "jobs": plan_jobs, "counts": [counts[Path(p)] for p, _, _ in plan_jobs]}
    shards.start_plan(out, plan, overwrite)

    receipts, jobs = [], []
    for path, split, files in plan_jobs:
        done = [shards.read_receipt(out, file) for file in files]
        if all(done):
            receipts += done
        else:
            jobs.append((write_batch_shards, (path, str(out), split, files, per_shard, num_classes),
                         counts[Path(path)]))
    if receipts:
        print(f"resuming: {len(receipts)} shards already written", flush=True)
    for result in run_jobs(jobs, workers, f"prepare {src.name} ({side}x{side} npz)"):
        receipts += result
    source = {"kind": "imagenet-npz", "src": str(src), "size": side}
    return shards.write_manifest(out, receipts, classes, classes, (side, side, 3), source)
