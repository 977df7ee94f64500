"""sl.linear training images/s on 64x64 images, before and after the per-batch fixes, in one run.

    PYTHONPATH=platform python benchmarks/linear_throughput.py [--rounds 3 --batches 8]

"before" is today's workload with its train_batch replaced by the earlier one: the loss and
the batch's correct count were read to the host after every batch (two syncs), and train
accuracy came from a second, no-grad forward pass after the update. "after" is the workload
as shipped: accuracy from the training forward pass, sums kept on the device, one sync per
step. Both train the seed's classifier (1000 classes, 12,288 inputs, batch 256, centred
pixels) on the same resident synthetic shards; rounds alternate so load drifts hit both.
On a CPU a host sync is nearly free, so what this measures is the extra forward pass; on a
GPU the syncs also stall the launch queue (see gpu_check.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from runyard.data.shards import start_plan, write_manifest, write_shard  # noqa: E402
from runyard.workloads.base import WorkloadContext  # noqa: E402
from runyard.workloads.sl.linear import LinearClassifier  # noqa: E402

SEED_CONFIG = dict(preprocess="center", init_std=1e-4, lr=1e-7, weight_decay=100.0,
                   batch_size=256, optimizer="sgd", momentum=0.9)


class BeforeLinear(LinearClassifier):
    """The earlier per-batch code: two host syncs and a second forward pass per batch."""

    def train_batch(self, inputs, labels):
        self.optimizer.zero_grad()
        loss = (F.cross_entropy(self.trained(inputs), labels)
                + 0.5 * self.config.weight_decay * self.model.weight.pow(2).sum())
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            correct = (self.scores(inputs).argmax(1) == labels).sum().item()
        return torch.tensor(loss.item() * len(labels)), torch.tensor(correct)


def write_dataset(root: Path, images: int, classes: int) -> None:
    rng = np.random.default_rng(0)
    start_plan(root, {"kind": "benchmark"}, overwrite=True)
    receipts = []
    for split, count in (("train", images), ("val", 256)):
        labels = np.arange(count) % classes
        pixels = rng.integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8)
        receipts.append(write_shard(root, f"{split}-00000.parquet", split, pixels, labels, classes))
    names = [f"n{c:08d}" for c in range(classes)]
    write_manifest(root, receipts, names, names, (64, 64, 3), {"kind": "benchmark"})


def images_per_s(workload_cls, data: dict, batches: int) -> float:
    workload = workload_cls()
    workload.setup(LinearClassifier.Config(**SEED_CONFIG, batches_per_step=batches),
                   WorkloadContext(seed=0, data=data))
    workload.step()  # warm-up: first touches of the weights and the resident split
    return workload.step()["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per measurement")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), images=256 * args.batches, classes=1000)
        data = {"path": tmp, "resident": True, "val_batches": 1}
        results = {"before": [], "after": []}
        for _ in range(args.rounds):
            results["before"].append(images_per_s(BeforeLinear, data, args.batches))
            results["after"].append(images_per_s(LinearClassifier, data, args.batches))
    print(f"machine: {describe()}, torch threads {args.threads}")
    before, after = (statistics.median(results[k]) for k in ("before", "after"))
    print(f"{'variant':8s} {'images/s (median of ' + str(args.rounds) + ')':>28s}  rounds")
    for name, value in (("before", before), ("after", after)):
        print(f"{name:8s} {value:28.0f}  {', '.join(f'{v:.0f}' for v in results[name])}")
    print(f"after / before: {after / before:.2f}")


if __name__ == "__main__":
    main()
