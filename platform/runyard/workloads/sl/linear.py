"""sl.linear — a softmax linear classifier, s = W x + b, trained with cross-entropy.

The classifier of "Breaking linear classifiers on ImageNet": one weight template per class.
Its defaults suit a small dataset; the seed's ImageNet settings (init std 1e-4, lr ~1e-7,
weight decay ~100, on mean-centred 0..255 pixels: `preprocess: center`) are ordinary config
values (jobs/imagenet64_linear.yaml).

Data: `data: {source: digits}` (in memory) or `data: {path: DIR}` (shards prepared by
`runyard data prepare`, streamed or resident), both read the same way: train and validation
loaders, split over DDP ranks when torch.distributed is initialized. One `step()` is one
epoch or `batches_per_step` batches, and ends with an evaluation on the validation set. All
randomness (init, the per-epoch shuffle) derives from the trial seed, and a checkpoint keeps
the position in the epoch, so a restored run continues bit for bit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext
from runyard.workloads.blocks import ShardsData
from runyard.workloads.lazy import lazy_module
from runyard.workloads.sl.metrics import CLASSIFIER_METRICS
from runyard.workloads.sl.datasets import check_data_inputs, digits_splits, load_dataset

# Imported on first use, so `runyard validate` reads LinearConfig without paying for torch.
torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


class LinearConfig(WorkloadConfig):
    lr: float = Field(0.1, gt=0, description="learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="L2 strength λ: the loss adds λ/2·‖W‖²")
    init_std: float = Field(1e-2, ge=0, description="std of the Gaussian that initialises W")
    batch_size: int = Field(64, ge=1, description="global batch (split over DDP ranks)")
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adam)")
    preprocess: Literal["standardize", "center"] = Field(
        "standardize", description="shards: (x-mean)/std per channel, or only x-mean on the "
                                   "0..255 scale (the seed's setting, for lr ~1e-7)")
    batches_per_step: int | None = Field(None, ge=1, description="batches per step (null: one "
                                                                 "epoch)")


class LinearClassifier(Workload):
    Config = LinearConfig
    metrics = CLASSIFIER_METRICS
    blocks = ("data",)

    @classmethod
    def check_inputs(cls, config: LinearConfig, context: WorkloadContext) -> list[str]:
        return check_data_inputs(context.data)

    def setup(self, config: LinearConfig, context: WorkloadContext) -> None:
        from runyard.workloads.sl import training
        from runyard.workloads.sl.nets import LinearModel

        self.config, self.context = config, context
        self.init_rng = torch.Generator().manual_seed(context.seed)
        self.device = training.training_device(context.parallel)
        if isinstance(context.data, ShardsData):
            self.data = training.ShardData(context.data, context.seed, config.batch_size,
                                           self.device, center_only=config.preprocess == "center")
        else:
            self.data = digits_splits(context.data, context.seed, config.batch_size,
                                      *training.rank_and_world())
        self.normalize = self.data.normalize.to(self.device)
        self.cursor = training.BatchCursor(self.data.train)
        classes, self.image_shape = self.data.num_classes, self.data.image_shape
        self.class_names = self.data.class_names
        fixed_images, fixed_labels = next(self.data.val.batches(0))
        self.dynamics = training.PredictionDynamics(fixed_images[:16], fixed_labels[:16])
        features = int(np.prod(self.image_shape))
        self.model = LinearModel(features, classes, config.init_std, self.init_rng).to(self.device)
        self.trained = training.wrap_distributed(self.model, self.device)
        params = [self.model.weight, self.model.bias]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.steps = 0

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """N x H x W x C images -> normalised floats in the same pixel order."""
        return self.normalize.hwc(images.to(self.device))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # s = W x + b

    def train_batch(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on a batch of model inputs; returns (loss * n, correct) as device
        tensors, so the caller decides when to synchronise with the host. Accuracy is read
        off the same forward pass that trains (the scores before this update)."""
        self.optimizer.zero_grad(set_to_none=True)
        scores = self.trained(inputs)
        # Softmax cross-entropy plus λ/2·‖W‖² (the bias is not regularised).
        loss = (F.cross_entropy(scores, labels)
                + 0.5 * self.config.weight_decay * self.model.weight.pow(2).sum())
        loss.backward()
        self.optimizer.step()
        return loss.detach() * len(labels), (scores.detach().argmax(1) == labels).sum()

    def step(self) -> dict[str, float]:
        from runyard.workloads.sl import training

        start = time.perf_counter()
        batches = ((self.inputs(images), labels.to(self.device, non_blocking=True))
                   for images, labels in self.cursor.take(self.config.batches_per_step))
        # Sums stay on the device: one host sync per step, not two per batch.
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        seen, batch_count = 0, 0
        for inputs, labels in batches:
            batch_loss, batch_correct = self.train_batch(inputs, labels)
            sums += torch.stack([batch_loss.double(), batch_correct.double()])
            seen += len(labels)
            batch_count += 1
        total_loss, correct, seen = training.all_reduce_sum([*sums.tolist(), float(seen)], self.device)
        elapsed = time.perf_counter() - start
        self.steps += 1
        val = training.evaluate(lambda images: self.scores(self.inputs(images)),
                                self.data.val, self.device, self.data.val_batches)
        with torch.no_grad():
            self.dynamics.record(self.steps, self.scores(self.inputs(self.dynamics.images)))
        epoch = self.cursor.epochs_done
        if not np.isfinite(total_loss):
            raise FloatingPointError(
                f"training loss is not finite after epoch {epoch:g} (lr={self.config.lr}); "
                "lower config.lr or config.init_std")
        return {
            "train_loss": total_loss / seen,
            "train_top1": correct / seen,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "epoch": float(epoch),
            "images_per_s": seen / elapsed,
            "epoch_time_s": elapsed * len(self.data.train) / max(batch_count, 1),
        }

    def save(self, directory: Path) -> None:
        state = {
            "weight": self.model.weight.detach().cpu().clone(),
            "bias": self.model.bias.detach().cpu().clone(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "cursor": self.cursor.state_dict(),
            "dynamics": self.dynamics.state_dict(),
        }
        torch.save(state, Path(directory) / "linear.pt")

    def restore(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "linear.pt", weights_only=True, map_location=self.device)
        with torch.no_grad():
            self.model.weight.copy_(state["weight"])
            self.model.bias.copy_(state["bias"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
        self.cursor.load_state_dict(state["cursor"])
        self.dynamics.load_state_dict(state["dynamics"])

    def artifacts(self, directory: Path) -> None:
        """The learned weights as images: one template per class (the seed's figure), the
        prediction dynamics and a grid of misclassified validation images."""
        from runyard.workloads.sl import training
        from runyard.workloads.sl.templates import save_template_grid

        directory = Path(directory)
        save_template_grid(self.model.weight.detach().cpu().numpy(), self.image_shape,
                           self.class_names, directory / "templates.png")
        self.dynamics.save(directory, self.class_names)
        training.save_misclassified_grid(lambda images: self.scores(self.inputs(images)),
                                         self.data.val, self.device, self.class_names,
                                         directory / "misclassified.png")

    @classmethod
    def preflight_checks(cls, config: LinearConfig, context: WorkloadContext,
                         batch_size: int = 32) -> list:
        """The Recipe's checks (preflight.py) on fresh models of this config and a bounded,
        class-balanced sample of the trial's data; nothing is set up, no split loaded."""
        from runyard.workloads.sl import training
        from runyard.workloads.sl.nets import LinearModel
        from runyard.workloads.sl.preflight import PreflightSample, run_checks, sample_sizes

        if isinstance(context.data, ShardsData):
            device = training.training_device(context.parallel)
            center_only = config.preprocess == "center"
            sample = training.preflight_sample(
                context.data, device,
                lambda manifest: training.normalizer_for(manifest, center_only).to(device).hwc)
            image_shape = tuple(sample.inputs.shape[1:])
        else:
            from runyard.data.sample import take_per_class

            device = torch.device("cpu")
            data = load_dataset(context.data)
            train_per_class, held_per_class = sample_sizes(data.num_classes)
            train = torch.from_numpy(take_per_class(data.y_train.numpy(), train_per_class, data.num_classes))
            held = torch.from_numpy(take_per_class(data.y_val.numpy(), held_per_class, data.num_classes))
            sample = PreflightSample(data.x_train[train], data.y_train[train], data.x_val[held],
                                     data.y_val[held], data.num_classes)
            image_shape = data.image_shape
        features = int(np.prod(image_shape))

        def make_model(seed: int) -> torch.nn.Module:
            generator = torch.Generator().manual_seed(seed)
            return LinearModel(features, sample.num_classes, config.init_std, generator).to(device)

        return run_checks(make_model, sample, batch_size=min(batch_size, config.batch_size),
                          seed=context.seed)

