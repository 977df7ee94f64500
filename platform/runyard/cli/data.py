"""`runyard data synth | prepare | inspect`: get images into the shard format training reads.

Wiring: the main CLI calls `add_data_commands(subparsers)`; every leaf parser sets
`func=callable(args) -> exit code`. Errors in the input raise runyard.errors.UserError,
which the main CLI prints and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os

from runyard.errors import EXIT_OK

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    data = subparsers.add_parser(
        "data", formatter_class=_FORMATTER,
        help="make, prepare and inspect image datasets for sl.* workloads",
        description="Turn images into the Parquet shards that sl.linear and sl.convnet read.",
        epilog="""typical session (a laptop demo, then the real thing on a cluster node):
  runyard data synth data/synth-jpeg --classes 10
  runyard data prepare imagenet --src data/synth-jpeg --size 64 --out data/synth64
  runyard data inspect data/synth64
  runyard data prepare imagenet --src /datasets/ILSVRC2012 --size 64 --out /datasets/imagenet64
  runyard data prepare imagenet64-npz --src /datasets/Imagenet64_npz --out /datasets/imagenet64""")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    synth = commands.add_parser(
        "synth", formatter_class=_FORMATTER, help="write a small synthetic ImageNet-layout JPEG tree",
        description="""Write OUT/train/<wnid>/*.JPEG and OUT/val/..., like the ImageNet release.
Classes are oriented stripe patterns with random phase and colour: a ConvNet learns them, a
linear classifier on pixels barely beats chance. Use it to try a pipeline without ImageNet.""",
        epilog="""examples:
  runyard data synth data/synth-jpeg
  runyard data synth data/synth-jpeg --classes 16 --train-per-class 500 --val-layout flat""")
    synth.add_argument("out", help="folder to create (train/ and val/ go inside)")
    synth.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    synth.add_argument("--train-per-class", type=int, default=200, help="default 200")
    synth.add_argument("--val-per-class", type=int, default=50, help="default 50")
    synth.add_argument("--val-layout", choices=["folders", "flat"], default="folders",
                       help="val/<wnid>/*.JPEG (folders), or val/*.JPEG plus LOC_val_solution.csv (flat)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=_synth)

    prepare = commands.add_parser(
        "prepare", formatter_class=_FORMATTER, help="convert a dataset into Parquet shards",
        description="""Decode once, train many times: write raw uint8 images and int16 labels as
Parquet shards plus manifest.json. Interrupted? Run the same command again: finished shards
are kept and skipped.""")
    sources = prepare.add_subparsers(dest="source", metavar="SOURCE", required=True)

    imagenet = sources.add_parser(
        "imagenet", formatter_class=_FORMATTER, help="an ImageNet folder tree (JPEGs)",
        description="""Read SRC/train/<wnid>/*.JPEG and SRC/val/<wnid>/*.JPEG (or flat SRC/val/*.JPEG
with a labels file). Each image: shorter side resized to --size, then center-cropped to
--size x --size. Classes are the sorted train/ folder names, in label order.""",
        epilog="""examples:
  runyard data prepare imagenet --src /data/ILSVRC2012 --size 64 --out /data/imagenet64
  runyard data prepare imagenet --src /data/ILSVRC2012 --size 224 --out /data/imagenet224 \\
      --val-labels /data/LOC_val_solution.csv --workers 16
  runyard data prepare imagenet --src data/synth-jpeg --size 32 --out data/synth32 --skip-corrupt""")
    imagenet.add_argument("--src", required=True, help="folder holding train/ and val/")
    imagenet.add_argument("--out", required=True, help="output folder for shards + manifest.json")
    imagenet.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    imagenet.add_argument("--val-labels", default=None,
                          help="labels for a flat val/: Kaggle LOC_val_solution.csv or `FILE WNID` lines "
                               "(default: SRC/LOC_val_solution.csv if val/ is flat)")
    imagenet.add_argument("--skip-corrupt", action="store_true",
                          help="leave out undecodable images (listed under `skipped` in the "
                               "manifest) instead of stopping at the first one")
    _shared_prepare_flags(imagenet)
    imagenet.set_defaults(func=_prepare_imagenet)

    npz = sources.add_parser(
        "imagenet64-npz", formatter_class=_FORMATTER,
        help="the downsampled-ImageNet npz release (64x64, 32x32, 16x16)",
        description="""Read SRC/train_data_batch_*.npz and SRC/val_data.npz (`data`: N x 3*S*S uint8,
R plane then G then B; `labels`: 1..1000). Pixels become S x S x RGB, labels 0..999.""",
        epilog="""examples:
  runyard data prepare imagenet64-npz --src /data/Imagenet64_npz --out /data/imagenet64
  runyard data prepare imagenet64-npz --src /data/Imagenet32_npz --out /data/imagenet32 \\
      --class-map /data/map_clsloc.txt""")
    npz.add_argument("--src", required=True, help="folder with train_data_batch_* and val_data")
    npz.add_argument("--out", required=True, help="output folder for shards + manifest.json")
    npz.add_argument("--class-map", default=None,
                     help="map_clsloc.txt (`WNID LABEL NAME` lines) to name classes by wnid")
    _shared_prepare_flags(npz, workers=2)
    npz.set_defaults(func=_prepare_npz)

    inspect = commands.add_parser(
        "inspect", formatter_class=_FORMATTER, help="counts, class balance and sample images",
        description="Check a prepared dataset against its manifest, print its counts and class "
                    "balance, and save a PNG grid of sample images per class.",
        epilog="""examples:
  runyard data inspect data/synth64
  runyard data inspect /data/imagenet64 --grid grid.png --classes 20 --verify --json""")
    inspect.add_argument("path", help="a folder written by `runyard data prepare`")
    inspect.add_argument("--grid", default=None, help="PNG to write (default: PATH/samples.png)")
    inspect.add_argument("--classes", type=int, default=10, help="classes in the grid (default 10)")
    inspect.add_argument("--per-class", type=int, default=8, help="images per class (default 8)")
    inspect.add_argument("--verify", action="store_true", help="also re-hash every shard (slow)")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(func=_inspect)
    return data


def _shared_prepare_flags(parser: argparse.ArgumentParser, workers: int | None = None) -> None:
    parser.add_argument("--workers", type=int, default=workers or _default_workers(),
                        help="decoding processes (default: %(default)s)")
    parser.add_argument("--shard-mb", type=float, default=256.0,
                        help="approximate shard size in MB (default 256)")
    parser.add_argument("--images-per-shard", type=int, default=None,
                        help="exact images per shard (overrides --shard-mb)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard shards in --out written with other inputs or settings")


def _synth(args: argparse.Namespace) -> int:
    from runyard.data.synth import write_synthetic_imagenet

    out = write_synthetic_imagenet(args.out, classes=args.classes,
                                   train_per_class=args.train_per_class,
                                   val_per_class=args.val_per_class, seed=args.seed,
                                   val_layout=args.val_layout)
    total = args.classes * (args.train_per_class + args.val_per_class)
    print(f"wrote {total} JPEGs in {args.classes} classes to {out}")
    print(f"next: runyard data prepare imagenet --src {out} --size 64 --out DIR")
    return EXIT_OK


def _report(manifest: dict, out: str) -> None:
    counts = {split: info["count"] for split, info in manifest["splits"].items()}
    print(f"prepared {out}: {counts} images, {len(manifest['classes'])} classes, "
          f"shape {manifest['image_shape']}, {len(manifest['skipped'])} skipped")


def _prepare_imagenet(args: argparse.Namespace) -> int:
    from runyard.data.imagenet import prepare_imagenet

    manifest = prepare_imagenet(args.src, args.out, args.size, val_labels=args.val_labels,
                                workers=args.workers, shard_mb=args.shard_mb,
                                images_per_shard=args.images_per_shard,
                                skip_corrupt=args.skip_corrupt, overwrite=args.overwrite)
    _report(manifest, args.out)
    return EXIT_OK


def _prepare_npz(args: argparse.Namespace) -> int:
    from runyard.data.npz import prepare_imagenet64_npz

    manifest = prepare_imagenet64_npz(args.src, args.out, class_map=args.class_map,
                                      workers=args.workers, shard_mb=args.shard_mb,
                                      images_per_shard=args.images_per_shard,
                                      overwrite=args.overwrite)
    _report(manifest, args.out)
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from runyard.data.inspect import save_sample_grid, summarize

    summary = summarize(args.path, verify_checksums=args.verify)
    grid = save_sample_grid(args.path, args.grid or Path(args.path) / "samples.png",
                            classes=args.classes, per_class=args.per_class)
    summary["grid"] = str(grid)
    if args.json:
        print(json.dumps(summary, indent=1))
        return EXIT_OK
    print(f"{summary['path']}: {summary['classes']} classes, images {summary['image_shape']}, "
          f"source {summary['source']['kind']}, {summary['skipped']} skipped")
    for split, info in summary["splits"].items():
        print(f"  {split:5s} {info['images']:>9d} images in {info['shards']} shards "
              f"({info['bytes'] / 2**20:.1f} MiB); per class min {info['per_class_min']}, "
              f"mean {info['per_class_mean']:.1f}, max {info['per_class_max']}"
              + (f"; EMPTY: {', '.join(info['empty_classes'][:5])}" if info["empty_classes"] else ""))
    mean = ", ".join(f"{v:.1f}" for v in summary["pixel_mean"])
    std = ", ".join(f"{v:.1f}" for v in summary["pixel_std"])
    print(f"  pixel mean (RGB) {mean}; std {std}")
    print(f"  sample grid: {grid}")
    return EXIT_OK
