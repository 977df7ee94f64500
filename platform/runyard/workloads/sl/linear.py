"""sl.linear — a softmax linear classifier, s = W x + b, trained with cross-entropy.

The classifier of "Breaking linear classifiers on ImageNet": one weight template per class.
Its defaults suit a small dataset; the seed's ImageNet settings (init std 1e-4, lr ~1e-7,
weight decay ~100) are ordinary config values.

One `step()` is one pass over the training set in shuffled minibatches, followed by an
evaluation on the validation set. All randomness (init, shuffling) comes from generators
seeded by the trial seed and saved in checkpoints, so a restored run continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext
from runyard.workloads.sl.datasets import ArrayDataset, load_dataset


class LinearConfig(WorkloadConfig):
    lr: float = Field(0.1, gt=0, description="learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="L2 strength λ: the loss adds λ/2·‖W‖²")
    init_std: float = Field(1e-2, ge=0, description="std of the Gaussian that initialises W")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam)")


class LinearClassifier(Workload):
    Config = LinearConfig
    metrics = {
        "train_loss": "min",
        "train_top1": "max",
        "val_loss": "min",
        "val_top1": "max",
        "val_top5": "max",
        "epoch": "max",
    }

    @classmethod
    def check_spec(cls, config: LinearConfig, context: WorkloadContext) -> list[str]:
        from runyard.workloads.sl.datasets import check_data

        return check_data(context.data)

    def setup(self, config: LinearConfig, context: WorkloadContext) -> None:
        self.config = config
        self.data: ArrayDataset = load_dataset(context.data, seed=context.seed)
        features = int(np.prod(self.data.x_train.shape[1:]))
        classes = self.data.num_classes

        self.init_rng = torch.Generator().manual_seed(context.seed)
        self.shuffle_rng = torch.Generator().manual_seed(context.seed + 1)
        self.weight = (torch.randn(classes, features, generator=self.init_rng) * config.init_std)
        self.weight.requires_grad_(True)
        self.bias = torch.zeros(classes, requires_grad=True)
        params = [self.weight, self.bias]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.epoch = 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias  # s = W x + b

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Softmax cross-entropy plus λ/2·‖W‖² (the bias is not regularised).
        data_loss = F.cross_entropy(self.scores(x), y)
        return data_loss + 0.5 * self.config.weight_decay * self.weight.pow(2).sum()

    def step(self) -> dict[str, float]:
        x, y = self.data.x_train, self.data.y_train
        order = torch.randperm(len(y), generator=self.shuffle_rng)
        total_loss, correct = 0.0, 0
        for start in range(0, len(y), self.config.batch_size):
            batch = order[start : start + self.config.batch_size]
            self.optimizer.zero_grad()
            loss = self.loss(x[batch], y[batch])
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(batch)
            with torch.no_grad():
                correct += (self.scores(x[batch]).argmax(1) == y[batch]).sum().item()
        self.epoch += 1
        if not np.isfinite(total_loss):
            raise FloatingPointError(
                f"training loss is not finite after epoch {self.epoch} (lr={self.config.lr}); "
                "lower config.lr or config.init_std")
        val = self.evaluate(self.data.x_val, self.data.y_val)
        return {
            "train_loss": total_loss / len(y),
            "train_top1": correct / len(y),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "epoch": float(self.epoch),
        }

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        scores = self.scores(x)
        top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
        return {
            "loss": F.cross_entropy(scores, y).item(),
            "top1": (top5[:, 0] == y).float().mean().item(),
            "top5": (top5 == y[:, None]).any(1).float().mean().item(),
        }

    def save(self, directory: Path) -> None:
        torch.save(
            {
                "weight": self.weight.detach().clone(),
                "bias": self.bias.detach().clone(),
                "optimizer": self.optimizer.state_dict(),
                "shuffle_rng": self.shuffle_rng.get_state(),
                "epoch": self.epoch,
            },
            Path(directory) / "linear.pt",
        )

    def restore(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "linear.pt", weights_only=True)
        with torch.no_grad():
            self.weight.copy_(state["weight"])
            self.bias.copy_(state["bias"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle_rng.set_state(state["shuffle_rng"])
        self.epoch = state["epoch"]

    def artifacts(self, directory: Path) -> None:
        """The learned weights as images: one template per class (the seed's figure)."""
        from runyard.workloads.sl.templates import save_template_grid

        save_template_grid(
            self.weight.detach().numpy(), self.data.image_shape, self.data.class_names,
            Path(directory) / "templates.png",
        )
