"""The on-disk format of a prepared dataset, and the resumable job runner that writes it.

A prepared dataset is a directory:

    manifest.json             written last: classes in label order, counts, image shape,
                              per-channel pixel mean/std of the training split, shard checksums
    train-00000.parquet ...   Parquet shards, two columns: `image` (fixed_size_binary of H*W*3
    val-00000.parquet ...     raw uint8 bytes, row-major H x W x RGB) and `label` (int16)
    .parts/plan.json          what this preparation will write (so a resume can check it)
    .parts/<shard>.json       one receipt per finished shard (count, checksum, class counts)

Every shard is written to a temporary name and renamed into place, then its receipt likewise,
so an interrupted preparation leaves only whole shards behind; a rerun skips every shard that
has a receipt and writes the rest.

Images are stored uncompressed, PLAIN-encoded, one row group and one data page per shard:
decoded pixels barely compress, and in that layout the Parquet page body *is* the N x H x W x 3
pixel array, byte for byte. `read_shard` then maps it straight from the file (no decoding,
no copy; the page cache serves it) and falls back to pyarrow's decoder for any other layout.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from runyard.errors import UserError

FORMAT = "runyard-shards/1"
MANIFEST = "manifest.json"
PARTS = ".parts"
SPLITS = ("train", "val")


def shard_schema(height: int, width: int) -> pa.Schema:
    return pa.schema(
        [pa.field("image", pa.binary(height * width * 3), nullable=False),
         pa.field("label", pa.int16(), nullable=False)],
        metadata={b"image_shape": json.dumps([height, width, 3]).encode()},
    )


def rows_per_shard(height: int, width: int, shard_mb: float) -> int:
    """How many images make a shard of about `shard_mb` megabytes (at most 1.5 GiB)."""
    return max(1, int(min(shard_mb, 1536) * 2**20) // (height * width * 3))


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ShardReceipt:
    """What a finished shard holds; the manifest is assembled from these."""

    file: str
    split: str
    count: int
    bytes: int
    sha256: str
    class_counts: list[int]
    pixel_sum: list[float]      # per channel, over every pixel of every image
    pixel_sq_sum: list[float]
    skipped: list[dict[str, str]]


def write_shard(out_dir: Path, file: str, split: str, images: np.ndarray, labels: np.ndarray,
                num_classes: int, skipped: list[dict[str, str]] | None = None) -> ShardReceipt:
    """Write one shard atomically and then its receipt. images: N x H x W x 3 uint8."""
    count, height, width, channels = images.shape
    if channels != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected N x H x W x 3 uint8 images, got {images.shape} {images.dtype}")
    flat = np.ascontiguousarray(images).reshape(count, height * width * 3)
    image_column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(height * width * 3), count, [None, pa.py_buffer(flat)])
    table = pa.Table.from_arrays(
        [image_column, pa.array(labels.astype(np.int16), pa.int16())],
        schema=shard_schema(height, width))
    path = out_dir / file
    tmp = path.with_name(f".{file}.tmp-{os.getpid()}")
    pixel_bytes = count * height * width * 3
    if pixel_bytes >= 2**31 - 2**20:
        raise ValueError(f"shard of {pixel_bytes} bytes: a Parquet page holds less than 2 GiB")
    pq.write_table(table, tmp, compression="none", row_group_size=max(1, count),
                   data_page_size=pixel_bytes + 2**20, data_page_version="1.0",
                   use_dictionary=False, write_statistics=False)
    os.replace(tmp, path)
    pixels = images.reshape(-1, 3).astype(np.float64)
    receipt = ShardReceipt(
        file=file, split=split, count=int(count), bytes=path.stat().st_size,
        sha256=file_sha256(path),
        class_counts=np.bincount(labels, minlength=num_classes).astype(int).tolist(),
        pixel_sum=pixels.sum(0).tolist(), pixel_sq_sum=np.square(pixels).sum(0).tolist(),
        skipped=skipped or [])
    atomic_write_bytes(out_dir / PARTS / f"{file}.json", json.dumps(receipt.__dict__).encode())
    return receipt


def read_receipt(out_dir: Path, file: str) -> ShardReceipt | None:
    """The receipt of a finished shard, or None if the shard still has to be written."""
    receipt_path = out_dir / PARTS / f"{file}.json"
    if not receipt_path.exists() or not (out_dir / file).exists():
        return None
    return ShardReceipt(**json.loads(receipt_path.read_text()))


def start_plan(out_dir: Path, plan: dict[str, Any], overwrite: bool) -> None:
    """Record what this preparation writes; refuse to mix two different preparations."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PARTS).mkdir(exist_ok=True)
    plan_path = out_dir / PARTS / "plan.json"
    encoded = json.dumps(plan, sort_keys=True)
    if plan_path.exists() and plan_path.read_text() != encoded:
        if not overwrite:
            raise UserError(
                f"{out_dir}: holds a preparation with different inputs or settings "
                f"(see {plan_path}). Fix: choose a new --out directory, or pass --overwrite "
                "to discard the shards there.")
        for stale in list(out_dir.glob("*.parquet")) + list((out_dir / PARTS).glob("*.json")):
            stale.unlink()
        (out_dir / MANIFEST).unlink(missing_ok=True)
    elif (out_dir / MANIFEST).exists() and not plan_path.exists():
        raise UserError(f"{out_dir}: has a manifest.json but no preparation plan; it was not "
                        "written by this version of `runyard data prepare`. Fix: use a new --out.")
    atomic_write_bytes(plan_path, encoded.encode())


def write_manifest(out_dir: Path, receipts: list[ShardReceipt], classes: list[str],
                   class_names: list[str], image_shape: tuple[int, int, int],
                   source: dict[str, Any]) -> dict[str, Any]:
    """Assemble the manifest from shard receipts; fail if a class has no training image."""
    num_classes = len(classes)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        mine = sorted((r for r in receipts if r.split == split), key=lambda r: r.file)
        class_counts = np.zeros(num_classes, dtype=np.int64)
        for receipt in mine:
            class_counts += np.asarray(receipt.class_counts, dtype=np.int64)
        splits[split] = {
            "count": int(sum(r.count for r in mine)),
            "class_counts": class_counts.tolist(),
            "shards": [{"file": r.file, "count": r.count, "bytes": r.bytes, "sha256": r.sha256}
                       for r in mine],
        }
    empty = [classes[c] for c, n in enumerate(splits["train"]["class_counts"]) if n == 0]
    if empty:
        raise UserError(
            f"{out_dir}: {len(empty)} class(es) have no usable training image after preparation: "
            f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}. A classifier cannot "
            "learn a class it never sees. Fix: add images for them or remove their folders.")
    train = [r for r in receipts if r.split == "train"]
    pixel_count = splits["train"]["count"] * image_shape[0] * image_shape[1]
    pixel_sum = np.sum([r.pixel_sum for r in train], axis=0)
    pixel_sq_sum = np.sum([r.pixel_sq_sum for r in train], axis=0)
    mean = pixel_sum / pixel_count
    std = np.sqrt(np.maximum(pixel_sq_sum / pixel_count - mean**2, 0.0))
    manifest = {
        "format": FORMAT,
        "source": source,
        "classes": classes,
        "class_names": class_names,
        "image_shape": list(image_shape),
        "pixel_mean": mean.tolist(),
        "pixel_std": std.tolist(),
        "splits": splits,
        "skipped": [entry for r in receipts for entry in r.skipped],
    }
    atomic_write_bytes(out_dir / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """A manifest's content, checked on its own (its format, its counts), wherever it was
    read from; `where` names it in errors."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{where}: not valid JSON ({error}). Fix: rerun `runyard data prepare`.")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(f"{where}: format {found!r}, expected {FORMAT!r}. "
                        "Fix: prepare the data again with this version of runyard.")
    for split, info in manifest["splits"].items():
        if sum(s["count"] for s in info["shards"]) != info["count"]:
            raise UserError(f"{where}: splits.{split}: shard counts do not add up to "
                            f"count={info['count']}. The manifest was edited or corrupted; "
                            "Fix: rerun `runyard data prepare` into a new directory.")
    return manifest


def manifest_shards(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every shard of every split, as the manifest lists them (file, count, bytes, sha256)."""
    return [shard for info in manifest["splits"].values() for shard in info["shards"]]


def load_manifest(directory: str | Path, verify_checksums: bool = False) -> dict[str, Any]:
    """Read and check a prepared dataset's manifest against the shards on disk.

    Always checks that every shard exists with the recorded size and row count; with
    verify_checksums also re-hashes every shard (slow on ImageNet: reads every byte)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        hint = (" The preparation there did not finish; rerun the same `runyard data prepare` "
                "command to complete it." if (directory / PARTS).exists() else
                " Fix: prepare it first with `runyard data prepare imagenet --src ... --out DIR`.")
        raise UserError(f"{directory}: no {MANIFEST}, so this is not a prepared dataset.{hint}")
    manifest = parse_manifest(path.read_bytes(), str(path))
    for shard in manifest_shards(manifest):
        shard_path = directory / shard["file"]
        if not shard_path.exists():
            raise UserError(f"{shard_path}: listed in {MANIFEST} but missing. Fix: copy the "
                            "whole dataset directory again, or rerun `runyard data prepare`.")
        if shard_path.stat().st_size != shard["bytes"]:
            raise UserError(f"{shard_path}: {shard_path.stat().st_size} bytes on disk, the "
                            f"manifest says {shard['bytes']}. The shard was changed or "
                            "truncated; Fix: copy it again or rerun `runyard data prepare`.")
        rows = pq.ParquetFile(shard_path).metadata.num_rows
        if rows != shard["count"]:
            raise UserError(f"{shard_path}: {rows} images, the manifest says "
                            f"{shard['count']}. Fix: rerun `runyard data prepare`.")
        if verify_checksums and file_sha256(shard_path) != shard["sha256"]:
            raise UserError(f"{shard_path}: checksum differs from {MANIFEST}; the file is "
                            "corrupted. Fix: copy it again or rerun `runyard data prepare`.")
    return manifest


def read_shard(path: str | Path, image_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One shard as (N x H x W x 3 uint8, read-only; N int64 labels).

    Shards written by `write_shard` are memory-mapped: the array is a view of the page cache.
    Other layouts (several pages, compression, a dictionary) are decoded by pyarrow."""
    parquet = pq.ParquetFile(path, memory_map=True)
    labels = parquet.read(columns=["label"]).column("label").to_numpy().astype(np.int64)
    images = _mapped_pixels(Path(path), parquet.metadata, image_shape)
    if images is None:
        column = parquet.read(columns=["image"]).column("image").combine_chunks()
        row_bytes = int(np.prod(image_shape))
        images = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * row_bytes,
                               offset=column.offset * row_bytes).reshape(-1, *image_shape)
    return images, labels


def _mapped_pixels(path: Path, metadata: pq.FileMetaData,
                   image_shape: tuple[int, int, int]) -> np.ndarray | None:
    """The image column's values as a view of the file, if they lie there contiguously:
    one row group whose image chunk is one uncompressed PLAIN data page with no levels
    (a required column), so the page body is exactly N * H*W*3 bytes."""
    count = metadata.num_rows
    if metadata.num_row_groups != 1 or count == 0:
        return None
    chunk = metadata.row_group(0).column(0)
    schema_column = metadata.schema.column(0)
    if (chunk.path_in_schema != "image" or chunk.compression != "UNCOMPRESSED"
            or chunk.has_dictionary_page or schema_column.max_definition_level != 0
            or schema_column.max_repetition_level != 0 or "PLAIN" not in chunk.encodings):
        return None
    values = count * int(np.prod(image_shape))
    with open(path, "rb") as handle:
        handle.seek(chunk.data_page_offset)
        header = handle.read(64)
        # MAP_POPULATE maps every page up front (from the page cache, or reading ahead from
        # disk) instead of taking a page fault per 4 KiB on first touch during gathers.
        populate = getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | populate,
                           prot=mmap.PROT_READ)
    page_type, body_bytes = _page_type_and_size(header)
    chunk_end = chunk.data_page_offset + chunk.total_compressed_size
    # One page only: its body ends the chunk and holds every value.
    if page_type != 0 or body_bytes != values or chunk.total_compressed_size - body_bytes > 64:
        return None
    return np.frombuffer(mapped, dtype=np.uint8, count=values,
                         offset=chunk_end - values).reshape(count, *image_shape)


def _page_type_and_size(header: bytes) -> tuple[int, int]:
    """(type, compressed_page_size) from a Thrift-compact PageHeader: fields 1 (type),
    2 (uncompressed size) and 3 (compressed size) are i32 zigzag varints."""
    fields: dict[int, int] = {}
    position, field_id = 0, 0
    while len(fields) < 3 and position < len(header):
        byte = header[position]
        position += 1
        if byte & 0x0F != 5:  # not an i32 field: not a layout we read
            return -1, -1
        field_id = field_id + (byte >> 4) if byte >> 4 else field_id
        value, shift = 0, 0
        while position < len(header):
            part = header[position]
            position += 1
            value |= (part & 0x7F) << shift
            shift += 7
            if not part & 0x80:
                break
        fields[field_id] = (value >> 1) ^ -(value & 1)
    return fields.get(1, -1), fields.get(3, -1)
