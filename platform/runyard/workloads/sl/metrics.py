"""What every classifier reports each step, and which way is better (a module of its own,
importing nothing heavy, so a spec is checked against it without torch)."""

from __future__ import annotations

from runyard.workloads.base import Direction

CLASSIFIER_METRICS: dict[str, Direction] = {
    "train_loss": "min", "train_top1": "max", "val_loss": "min", "val_top1": "max",
    "val_top5": "max", "epoch": "max", "images_per_s": "max", "epoch_time_s": "min",
}
