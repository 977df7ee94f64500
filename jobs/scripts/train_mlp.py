"""A plain PyTorch training script: a small MLP on scikit-learn's 8x8 digits.

It knows nothing of runyard. It takes its hyperparameters as flags, prints one JSON line per
epoch, and keeps a checkpoint in the directory named by $RUNYARD_CHECKPOINT_DIR (any folder
when run by hand), continuing from $RUNYARD_RESTORE_DIR when that is set. Run by hand:

    python jobs/scripts/train_mlp.py --lr 0.1 --epochs 5

or swept by runyard: jobs/command_sweep.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(digits.target)
    # A fixed split (not the seed's): every trial is judged on the same held-out digits.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    val, train = order[:360], order[360:]

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    checkpoint_dir = Path(os.environ.get("RUNYARD_CHECKPOINT_DIR", "checkpoints"))
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    first_epoch = 1
    restore = os.environ.get("RUNYARD_RESTORE_DIR")
    if restore:
        state = torch.load(Path(restore) / "state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first_epoch = state["epoch"] + 1

    for epoch in range(first_epoch, args.epochs + 1):
        model.train()
        total, batches = 0.0, 0
        for batch in torch.randperm(len(train)).split(args.batch_size):
            index = train[batch]
            loss = nn.functional.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        model.eval()
        with torch.no_grad():
            val_acc = (model(images[val]).argmax(1) == labels[val]).float().mean().item()
        # Write the checkpoint whole, then say so in the same line as the epoch's metrics.
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(), "epoch": epoch}, checkpoint_dir / "state.pt")
        print(json.dumps({"epoch": epoch, "train_loss": total / batches, "val_acc": val_acc,
                          "checkpoint": True}))


if __name__ == "__main__":
    main()
