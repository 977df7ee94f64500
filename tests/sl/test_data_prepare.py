"""`runyard data prepare`: exact round trips, resumption, and clear errors on bad input."""

from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from runyard.cli.data import add_data_commands
from runyard.data import load_manifest, read_shard
from runyard.data.imagenet import prepare_imagenet
from runyard.data.npz import prepare_imagenet64_npz
from runyard.errors import UserError


def all_rows(directory, split):
    manifest = load_manifest(directory)
    images, labels = [], []
    for shard in manifest["splits"][split]["shards"]:
        shard_images, shard_labels = read_shard(directory / shard["file"], tuple(manifest["image_shape"]))
        images.append(shard_images.copy())
        labels.append(shard_labels)
    return np.concatenate(images), np.concatenate(labels)


def write_png_tree(root, rng, classes=("n01", "n02", "n03"), per_class=5, shape=(16, 16),
                   flat_val=False):
    """Lossless PNGs with known pixels; returns {pixel bytes: (split, label)}."""
    truth = {}
    rows = []
    for split in ("train", "val"):
        for label, wnid in enumerate(classes):
            folder = root / split / ("" if split == "val" and flat_val else wnid)
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
                name = f"{wnid}_{split}_{index}"
                Image.fromarray(pixels).save(folder / f"{name}.png")
                truth[pixels.tobytes()] = (split, label)
                rows.append((name, wnid))
    if flat_val:
        with open(root / "LOC_val_solution.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ImageId", "PredictionString"])
            writer.writerows([name, f"{wnid} 1 2 3 4"] for name, wnid in rows if "_val_" in name)
    return truth


@pytest.mark.parametrize("flat_val", [False, True])
def test_folder_tree_round_trip_is_pixel_exact(tmp_path, flat_val):
    truth = write_png_tree(tmp_path / "src", np.random.default_rng(1), flat_val=flat_val)
    manifest = prepare_imagenet(tmp_path / "src", tmp_path / "out", size=16, workers=2,
                                images_per_shard=4)
    assert manifest["classes"] == ["n01", "n02", "n03"]
    assert manifest["splits"]["train"]["class_counts"] == [5, 5, 5]
    assert manifest["splits"]["val"]["class_counts"] == [5, 5, 5]
    seen = set()
    for split in ("train", "val"):
        images, labels = all_rows(tmp_path / "out", split)
        for image, label in zip(images, labels):
            assert truth[image.tobytes()] == (split, label)
            seen.add(image.tobytes())
    assert seen == set(truth)
    # Shards were shuffled at preparation: the first training shard mixes classes.
    first = read_shard(tmp_path / "out" / "train-00000.parquet", (16, 16, 3))[1]
    assert len(set(first.tolist())) > 1


def test_resize_shorter_side_then_center_crop(tmp_path):
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)   # H x W: already 16 high
    tall = rng.integers(0, 256, size=(48, 32, 3), dtype=np.uint8)   # shorter side 32 -> 16
    for split in ("train", "val"):
        for wnid, pixels in (("n01", wide), ("n02", tall)):
            (tmp_path / "src" / split / wnid).mkdir(parents=True)
            Image.fromarray(pixels).save(tmp_path / "src" / split / wnid / "a.png")
    prepare_imagenet(tmp_path / "src", tmp_path / "out", size=16, workers=1)
    images, labels = all_rows(tmp_path / "out", "train")
    by_label = dict(zip(labels.tolist(), images))
    np.testing.assert_array_equal(by_label[0], wide[:, 4:20])  # center 16 columns of 24
    expected_tall = np.asarray(Image.fromarray(tall).resize((16, 24), Image.Resampling.BICUBIC,
                                                            reducing_gap=None))[4:20]
    np.testing.assert_array_equal(by_label[1], expected_tall)


def planar(images):
    """N x S x S x 3 -> the release's rows: R plane, then G, then B."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def test_npz_release_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "npz"
    src.mkdir()
    expected = {"train": [], "val": []}
    for name, count in (("train_data_batch_1.npz", 30), ("train_data_batch_2.npz", 25),
                        ("val_data.npz", 12)):
        images = rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
        labels = rng.integers(1, 6, size=count)  # the release numbers classes 1..K
        labels[:5] = [1, 2, 3, 4, 5]
        np.savez(src / name, data=planar(images), labels=labels.tolist())
        expected["val" if name.startswith("val") else "train"].append((images, labels - 1))
    manifest = prepare_imagenet64_npz(src, tmp_path / "out", workers=2, images_per_shard=10)
    assert manifest["image_shape"] == [8, 8, 3] and len(manifest["classes"]) == 5
    for split in ("train", "val"):
        images, labels = all_rows(tmp_path / "out", split)
        np.testing.assert_array_equal(images, np.concatenate([i for i, _ in expected[split]]))
        np.testing.assert_array_equal(labels, np.concatenate([l for _, l in expected[split]]))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_pixels_are_mapped_when_stored_and_read_once_when_compressed(tmp_path, save):
    from runyard.data.npz import load_batch, planar_to_hwc

    images = np.random.default_rng(4).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    save(tmp_path / "train_data_batch_1.npz", data=planar(images), labels=[1, 2, 3, 1, 2, 3])
    header_only, labels, side = load_batch(tmp_path / "train_data_batch_1.npz", load_data=False)
    assert header_only is None and side == 8 and labels.tolist() == [0, 1, 2, 0, 1, 2]
    data, _, _ = load_batch(tmp_path / "train_data_batch_1.npz")
    assert isinstance(data, np.memmap) == (save is np.savez)  # stored: a view of the file
    np.testing.assert_array_equal(planar_to_hwc(data[2:5], side), images[2:5])


def test_npz_with_zero_based_labels_is_refused(tmp_path):
    (tmp_path / "npz").mkdir()
    for name in ("train_data_batch_1.npz", "val_data.npz"):
        np.savez(tmp_path / "npz" / name, data=np.zeros((3, 192), np.uint8), labels=[0, 1, 2])
    with pytest.raises(UserError, match="labels start at 0"):
        prepare_imagenet64_npz(tmp_path / "npz", tmp_path / "out")


def test_interrupted_preparation_resumes(tmp_path):
    truth = write_png_tree(tmp_path / "src", np.random.default_rng(4), per_class=6)
    out = tmp_path / "out"
    # Interruption 1: a bad file stops the run part way (workers=1: shards in order).
    victim = sorted((tmp_path / "src" / "train" / "n03").iterdir())[0]
    good = victim.read_bytes()
    victim.write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot be decoded"):
        prepare_imagenet(tmp_path / "src", out, size=16, workers=1, images_per_shard=3)
    assert not (out / "manifest.json").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert finished, "shards before the bad file should be kept"
    # Interruption 2: a crash mid-write leaves a temporary file; a shard loses its receipt.
    (out / ".train-00004.parquet.tmp-999").write_bytes(b"partial")
    victim.write_bytes(good)
    manifest = prepare_imagenet(tmp_path / "src", out, size=16, workers=1, images_per_shard=3)
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    assert manifest["splits"]["train"]["count"] == 18 and manifest["splits"]["val"]["count"] == 18
    images, labels = all_rows(out, "train")
    assert all(truth[i.tobytes()] == ("train", l) for i, l in zip(images, labels))


def test_corrupt_image_is_reported_or_explicitly_skipped(tmp_path):
    write_png_tree(tmp_path / "src", np.random.default_rng(5))
    bad = tmp_path / "src" / "train" / "n02" / "n02_train_3.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(UserError) as error:
        prepare_imagenet(tmp_path / "src", tmp_path / "out", size=16, workers=2)
    assert str(bad) in str(error.value) and "--skip-corrupt" in str(error.value)
    manifest = prepare_imagenet(tmp_path / "src", tmp_path / "out2", size=16, workers=2,
                                skip_corrupt=True)
    assert [s["file"] for s in manifest["skipped"]] == ["train/n02/n02_train_3.png"]
    assert manifest["splits"]["train"]["class_counts"] == [5, 4, 5]


def test_empty_class_and_missing_val_are_reported(tmp_path):
    write_png_tree(tmp_path / "src", np.random.default_rng(6))
    (tmp_path / "src" / "train" / "n04").mkdir()
    with pytest.raises(UserError, match="empty class folder"):
        prepare_imagenet(tmp_path / "src", tmp_path / "out", size=16)
    (tmp_path / "src" / "train" / "n04").rmdir()
    for path in (tmp_path / "src" / "val").rglob("*.png"):
        path.unlink()
    with pytest.raises(UserError, match="empty class folder"):
        prepare_imagenet(tmp_path / "src", tmp_path / "out", size=16)


def test_mismatched_manifest_and_changed_settings_are_reported(tmp_path):
    write_png_tree(tmp_path / "src", np.random.default_rng(7))
    out = tmp_path / "out"
    prepare_imagenet(tmp_path / "src", out, size=16, images_per_shard=5)
    with pytest.raises(UserError, match="different inputs or settings"):
        prepare_imagenet(tmp_path / "src", out, size=8, images_per_shard=5)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["count"] += 1
    manifest["splits"]["train"]["count"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="the manifest says"):
        load_manifest(out)
    os.truncate(out / "val-00000.parquet", 100)
    manifest["splits"]["train"]["shards"][0]["count"] -= 1
    manifest["splits"]["train"]["count"] -= 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="truncated"):
        load_manifest(out)


def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="runyard")
    add_data_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_synth_prepare_inspect(tmp_path, capsys):
    assert run_cli("data", "synth", str(tmp_path / "jpeg"), "--classes", "3",
                   "--train-per-class", "4", "--val-per-class", "2", "--val-layout", "flat") == 0
    assert run_cli("data", "prepare", "imagenet", "--src", str(tmp_path / "jpeg"), "--size", "24",
                   "--out", str(tmp_path / "shards"), "--workers", "1") == 0
    assert run_cli("data", "inspect", str(tmp_path / "shards"), "--verify",
                   "--grid", str(tmp_path / "grid.png")) == 0
    output = capsys.readouterr().out
    assert "train        12 images" in output and "val           6 images" in output
    assert Image.open(tmp_path / "grid.png").size[0] > 100
    with pytest.raises(SystemExit):
        run_cli("data", "prepare", "imagenet", "--help")
    assert "examples:" in capsys.readouterr().out
