"""One training epoch on a GPU: the 64x64 linear classifier and a WideResNet, resident vs
streamed data. For a GPU machine (it runs on a CPU too, at toy sizes, to check it works).

    PYTHONPATH=platform python benchmarks/gpu_epoch.py                    # ImageNet-sized, synthetic
    PYTHONPATH=platform python benchmarks/gpu_epoch.py --data data/imagenet64   # real prepared data
    PYTHONPATH=platform python benchmarks/gpu_epoch.py --images 4096 --classes 10 --wrn-batches 4  # smoke test

Without --data it writes synthetic shards of ImageNet's size (1,281,167 training images of
64x64x3 uint8 in 1000 classes: 15.7 GB, random pixels: throughput does not depend on them)
into --workdir. For each of

  sl.linear   the seed's classifier (12.3M weights, batch 256, centred pixels)
  sl.convnet  WRN-36-2 with 4 stages (jobs/imagenet64_wrn.yaml), batch 128, bf16 + channels-last

and each data mode (resident: the split in GPU memory; streamed: shards read from the page
cache by ShardLoader), it reports setup time, training images/s and the epoch time: measured
over a full epoch for the linear classifier, extrapolated from --wrn-batches batches for the
WRN (one full WRN epoch takes long; pass --wrn-batches 0 for a full one).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def make_imagenet_sized_shards(root: Path, images: int, classes: int, val: int) -> None:
    from runyard.data.shards import rows_per_shard, start_plan, write_manifest, write_shard

    if (root / "manifest.json").exists():
        return
    rng = np.random.default_rng(0)
    per_shard = rows_per_shard(64, 64, 256)
    start_plan(root, {"kind": "benchmark", "images": images, "classes": classes}, overwrite=True)
    receipts = []
    for split, count in (("train", images), ("val", val)):
        for number, first in enumerate(range(0, count, per_shard)):
            n = min(per_shard, count - first)
            labels = (np.arange(first, first + n) % classes)
            pixels = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
            receipts.append(write_shard(root, f"{split}-{number:05d}.parquet", split, pixels,
                                        labels, classes))
            print(f"\rwriting {split} shards: {first + n}/{count}", end="", flush=True)
        print()
    names = [f"n{c:08d}" for c in range(classes)]
    write_manifest(root, receipts, names, names, (64, 64, 3), {"kind": "benchmark"})


def measure(workload_cls, config: dict, data: dict) -> dict[str, float]:
    from runyard.workloads.base import WorkloadContext

    start = time.perf_counter()
    workload = workload_cls()
    workload.setup(workload_cls.Config(**config), WorkloadContext(seed=0, data=data))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    setup_s = time.perf_counter() - start
    metrics = workload.step()
    workload.close()
    del workload
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"setup_s": setup_s, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="a prepared 64x64 dataset to use instead")
    parser.add_argument("--workdir", default="data/bench-imagenet64-synthetic")
    parser.add_argument("--images", type=int, default=1_281_167)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=10_000)
    parser.add_argument("--wrn-batches", type=int, default=300,
                        help="WRN batches to time (0: a full epoch)")
    parser.add_argument("--modes", default="resident,streamed")
    args = parser.parse_args()

    from runyard.workloads.sl.convnet import ConvNetClassifier
    from runyard.workloads.sl.linear import LinearClassifier

    path = args.data
    if path is None:
        path = args.workdir
        make_imagenet_sized_shards(Path(path), args.images, args.classes, args.val_images)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (no GPU: toy check only)"
    linear = dict(preprocess="center", init_std=1e-4, lr=1e-7, weight_decay=100.0, batch_size=256)
    wrn = dict(arch="wrn", depth=36, width=2, stages=4, lr=0.01, base_batch_size=128, batch_size=128,
               batches_per_step=args.wrn_batches or None)
    rows = []
    for mode in args.modes.split(","):
        data = {"path": path, "resident": mode == "resident", "val_batches": 2}
        for name, workload_cls, config in (("linear 64x64 (seed)", LinearClassifier, linear),
                                           ("WRN-36-2 64x64", ConvNetClassifier, wrn)):
            print(f"running {name}, {mode} ...", flush=True)
            rows.append((name, mode, measure(workload_cls, config, data)))
    print(f"\ndevice: {device}; data: {path}")
    print(f"{'workload':22s} {'data':9s} {'setup s':>8s} {'images/s':>10s} {'epoch s':>9s}")
    for name, mode, metrics in rows:
        print(f"{name:22s} {mode:9s} {metrics['setup_s']:8.1f} {metrics['images_per_s']:10.0f} "
              f"{metrics['epoch_time_s']:9.1f}")
    print("epoch s: measured for the linear classifier; for the WRN extrapolated from "
          f"{args.wrn_batches or 'all'} batches.")


if __name__ == "__main__":
    main()
