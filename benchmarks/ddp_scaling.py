"""DDP scaling on CPU: sl.convnet training throughput with 2 gloo workers vs 1 process.

    PYTHONPATH=platform python benchmarks/ddp_scaling.py [--batches 30] [--per-worker-batch 32]

Weak scaling, as DDP is used: every worker trains on batches of the same size (so 2 workers
process a global batch twice as large). Each worker runs on one torch thread. Scaling
efficiency = images/s with 2 workers / (2 x images/s with 1). The data are synthetic 32x32
shards in the prepared format; a warm-up step is excluded from timing. On a machine with
fewer free cores than workers the efficiency measures contention, not DDP: read it with
the machine's load in mind (printed).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_shards(root: Path, images: int) -> None:
    from runyard.data.shards import start_plan, write_manifest, write_shard

    rng = np.random.default_rng(0)
    start_plan(root, {"kind": "benchmark"}, overwrite=True)
    receipts = [write_shard(root, f"{split}-00000.parquet", split,
                            rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8),
                            np.arange(count) % 10, 10)
                for split, count in (("train", images), ("val", 64))]
    write_manifest(root, receipts, [str(c) for c in range(10)], [str(c) for c in range(10)],
                   (32, 32, 3), {"kind": "benchmark"})


def worker(rank: int, world: int, port: int, data: str, args: dict, out: str) -> None:
    from runyard.workloads.base import WorkloadContext
    from runyard.workloads.sl.convnet import ConvNetClassifier

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    try:
        config = ConvNetClassifier.Config(arch="wrn", depth=10, width=1,
                                          batch_size=args["per_worker_batch"] * world,
                                          batches_per_step=args["batches"])
        workload = ConvNetClassifier()
        workload.setup(config, WorkloadContext(seed=0, data={"path": data, "val_batches": 1}))
        workload.step()  # warm-up
        rates = [workload.step()["images_per_s"] for _ in range(args["repeats"])]
        if rank == 0:
            Path(out).write_text(json.dumps(max(rates)))
    finally:
        if world > 1:
            dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per repeat")
    parser.add_argument("--per-worker-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = vars(parser.parse_args())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_shards(root / "data", images=args["per_worker_batch"] * 2 * (args["batches"] + 1) * (args["repeats"] + 1))
        results = {}
        for world in (1, 2):
            out = root / f"rate{world}.json"
            mp.spawn(worker, args=(world, free_port(), str(root / "data"), args, str(out)),
                     nprocs=world, join=True)
            results[world] = json.loads(out.read_text())
    print(f"\nsl.convnet WRN-10-1 on 32x32, {args['per_worker_batch']} images per worker per "
          f"batch, {args['batches']} batches, best of {args['repeats']}, 1 torch thread per "
          f"worker, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'workers':>8s} {'images/s':>10s} {'speed-up':>9s} {'efficiency':>11s}")
    for world, rate in results.items():
        print(f"{world:8d} {rate:10.0f} {rate / results[1]:9.2f} {rate / (world * results[1]):11.2f}")


if __name__ == "__main__":
    main()
