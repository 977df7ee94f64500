"""sl.convnet — ResNet / WideResNet image classifiers on prepared shards, single process or DDP.

    data: {path: data/synth64}                      # from `runyard data prepare`
    config: {arch: wrn, depth: 16, width: 2, lr: 0.1, schedule: cosine, epochs: 40, ...}

One `step()` trains one epoch (or `batches_per_step` batches) and evaluates on the validation
split. What happens per batch:

    x = (uint8 pixels - mean) / std            on the device (channels-last on GPU)
    x = augment(x)                             optional: random horizontal flip, and a
                                               random crop of the image padded by 1/8
    loss = CE(f(x), y) with label smoothing    under bf16 autocast on GPU
    SGD with momentum (or Adam/AdamW), weight decay on conv/linear weights only

Learning rate (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): `lr` is the rate for
`base_batch_size` images; with batch_size B the rate is lr * B / base_batch_size (the linear
scaling rule; set base_batch_size: null to use lr as is). A linear warm-up from ~0 over
`warmup_epochs` precedes the schedule: constant (the Recipe's default), cosine to 0 over
`epochs`, or step (x gamma at each of `milestones`, in epochs). The rate is a function of
the optimizer step alone, so a restored run continues on the same curve.

Under torch.distributed (Ray Train / torchrun) the model is wrapped in
DistributedDataParallel and every rank reads batch_size / world_size images of its own
slice of the data; metrics are summed over ranks.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext
from runyard.workloads.blocks import ShardsData
from runyard.workloads.lazy import lazy_module
from runyard.workloads.sl.archs import check_arch
from runyard.workloads.sl.datasets import check_data_inputs
from runyard.workloads.sl.metrics import CLASSIFIER_METRICS

# Imported on first use, so `runyard validate` reads ConvNetConfig without paying for torch.
torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
training = lazy_module("runyard.workloads.sl.training")
nets = lazy_module("runyard.workloads.sl.nets")


class ConvNetConfig(WorkloadConfig):
    arch: Literal["resnet", "wrn"] = "resnet"
    depth: int = Field(18, ge=1, description="resnet: 18/34/50/101/152; wrn: 2*stages*n + 4")
    width: float = Field(1.0, gt=0, description="resnet: channel multiplier (1 = 64 base "
                                                "channels); wrn: widening factor k")
    stem: Literal["auto", "imagenet", "small"] = "auto"
    stages: int = Field(3, ge=1, le=5, description="wrn: stages of 16k, 32k, 64k (, 128k) channels; "
                                                   "4 for 64x64 inputs as in Chrabaszcz et al.")
    dropout: float = Field(0.0, ge=0, lt=1, description="wrn: dropout between the block's convs")
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, description="learning rate for base_batch_size images")
    base_batch_size: int | None = Field(256, ge=1, description="linear scaling reference (null: off)")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0, description="on conv/linear weights, not BN or biases")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Literal["none", "flip", "flip_crop"] = Field(
        "none", description="training-batch augmentation on the device (the shards hold "
                            "center crops only)")
    schedule: Literal["constant", "cosine", "step"] = "constant"
    epochs: float = Field(90, gt=0, description="schedule horizon (cosine reaches 0 here)")
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[float] = Field(default_factory=lambda: [30.0, 60.0, 80.0])
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule factor")
    batch_size: int = Field(256, ge=1, description="global batch, split over DDP ranks")
    batches_per_step: int | None = Field(None, ge=1, description="null: one epoch per step")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU")
    channels_last: bool | None = Field(None, description="null: on GPU only")
    sync_batchnorm: bool = Field(False, description="DDP on GPUs: batch statistics over all ranks")


class ConvNetClassifier(Workload):
    Config = ConvNetConfig
    metrics = {**CLASSIFIER_METRICS, "lr": "min"}
    blocks = ("data",)

    @classmethod
    def check_spec(cls, config: ConvNetConfig, context: WorkloadContext) -> list[str]:
        if not isinstance(context.data, ShardsData):
            return ["data.path: sl.convnet trains on prepared shards; set data: {path: DIR} "
                    "with DIR from `runyard data prepare` (try `runyard data synth` first)"]
        problems = check_arch(config.arch, config.depth, config.stages)
        if config.arch == "resnet" and config.dropout:
            problems.append("config.dropout: only for arch wrn")
        if config.arch == "resnet" and config.stages != 3:
            problems.append("config.stages: only for arch wrn (ResNets have 4 stages)")
        if config.schedule == "step" and sorted(config.milestones) != list(config.milestones):
            problems.append(f"config.milestones: must increase, found {config.milestones}")
        return problems

    @classmethod
    def check_inputs(cls, config: ConvNetConfig, context: WorkloadContext) -> list[str]:
        return check_data_inputs(context.data)

    def setup(self, config: ConvNetConfig, context: WorkloadContext) -> None:
        self.config, self.context = config, context
        self.device = training.training_device(context.parallel)
        on_gpu = self.device.type == "cuda"
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and on_gpu)
        self.channels_last = on_gpu if config.channels_last is None else config.channels_last
        if on_gpu:
            training.use_tf32(config.precision != "fp32")
        self.data = training.ShardData(context.data, context.seed, config.batch_size, self.device)
        self.cursor = training.BatchCursor(self.data.train)
        torch.manual_seed(context.seed)  # init and dropout draw from the global generator
        self.model = build_model(config, self.data.num_classes, self.data.image_shape[0]).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if config.sync_batchnorm:
            self.model = use_sync_batchnorm(self.model, self.device)
        self.trained = training.wrap_distributed(self.model, self.device)

        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=self.peak_lr, momentum=config.momentum,
                                             nesterov=config.nesterov)
        elif config.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=self.peak_lr)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=self.peak_lr)
        self.augment_rng = torch.Generator(self.device).manual_seed(context.seed + 2)
        self.updates = 0  # optimizer steps so far: the schedule's clock
        self.steps = 0
        fixed_images, fixed_labels = next(self.data.val.batches(0))
        self.dynamics = training.PredictionDynamics(fixed_images[:16], fixed_labels[:16])

    @property
    def peak_lr(self) -> float:
        if self.config.base_batch_size is None:
            return self.config.lr
        return self.config.lr * self.config.batch_size / self.config.base_batch_size

    def lr_at(self, update: int) -> float:
        """The learning rate for optimizer step `update` (0-based)."""
        c, per_epoch = self.config, len(self.data.train)
        epoch = update / per_epoch
        warmup = c.warmup_epochs
        if warmup and epoch < warmup:
            return self.peak_lr * (update + 1) / (warmup * per_epoch)
        if c.schedule == "cosine":  # lr_t = lr/2 (1 + cos(pi t/T)) (Loshchilov & Hutter, SGDR eq. 5)
            progress = min(1.0, (epoch - warmup) / max(c.epochs - warmup, 1e-12))
            return self.peak_lr * 0.5 * (1 + math.cos(math.pi * progress))
        if c.schedule == "step":
            return self.peak_lr * c.gamma ** sum(epoch >= m for m in c.milestones)
        return self.peak_lr

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.data.normalize(images.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last if self.channels_last
                            else torch.contiguous_format)

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """Random horizontal flips, and random crops of the image padded by 1/8 of its side
        with reflection (Krizhevsky et al. 2012; He et al. 2016), per example."""
        if self.config.augment == "none":
            return x
        n, _, height, width = x.shape
        flip = torch.rand(n, generator=self.augment_rng, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.config.augment == "flip_crop":
            pad = max(1, height // 8)
            padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
            dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=self.augment_rng,
                                   device=x.device)
            rows = (dy + torch.arange(height, device=x.device))[:, None, :, None]
            cols = (dx + torch.arange(width, device=x.device))[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, channel, rows, cols]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode class scores for uint8 images."""
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(self.inputs(images)).float()

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer update on a batch of uint8 images; returns (loss * n, correct) as
        device tensors, so the caller decides when to synchronise with the host."""
        c = self.config
        lr = self.lr_at(self.updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.augmented(self.inputs(images)), labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            scores = self.trained(x)
        loss = F.cross_entropy(scores.float(), y, label_smoothing=c.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.detach() * len(y), (scores.detach().argmax(1) == y).sum()

    def step(self) -> dict[str, float]:
        self.trained.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, batches = 0, 0
        start = time.perf_counter()
        for images, labels in self.cursor.take(self.config.batches_per_step):
            batch_loss, batch_correct = self.train_batch(images, labels)
            loss_sum += batch_loss  # accumulated on the device: no host sync per batch
            correct += batch_correct
            seen += len(labels)
            batches += 1
        totals = training.all_reduce_sum([*torch.stack([loss_sum, correct]).tolist(), float(seen)],
                                         self.device)  # the step's one host sync
        elapsed = time.perf_counter() - start
        self.steps += 1
        val = training.evaluate(self.scores, self.data.val, self.device, self.data.val_batches)
        with torch.no_grad():
            self.dynamics.record(self.steps, self.scores(self.dynamics.images))
        return {
            "train_loss": totals[0] / totals[2],
            "train_top1": totals[1] / totals[2],
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "epoch": self.cursor.epochs_done,
            "images_per_s": totals[2] / elapsed,
            "epoch_time_s": elapsed * len(self.data.train) / max(batches, 1),
            "lr": self.lr_at(max(self.updates - 1, 0)),
        }

    def save(self, directory: Path) -> None:
        torch.save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "cursor": self.cursor.state_dict(),
            "updates": self.updates,
            "steps": self.steps,
            "dynamics": self.dynamics.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "augment_rng": self.augment_rng.get_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }, Path(directory) / "convnet.pt")

    def restore(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "convnet.pt", weights_only=True, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.cursor.load_state_dict(state["cursor"])
        self.updates, self.steps = state["updates"], state["steps"]
        self.dynamics.load_state_dict(state["dynamics"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.augment_rng.set_state(state["augment_rng"].cpu())
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])

    def artifacts(self, directory: Path) -> None:
        """Prediction dynamics on the fixed validation batch, and misclassified images."""
        directory = Path(directory)
        self.dynamics.save(directory, self.data.class_names)
        training.save_misclassified_grid(self.scores, self.data.val, self.device,
                                         self.data.class_names, directory / "misclassified.png")

    @classmethod
    def preflight_checks(cls, config: ConvNetConfig, context: WorkloadContext,
                         batch_size: int = 16) -> list:
        """The Recipe's checks (preflight.py) on fresh models of this config and a bounded,
        class-balanced sample of the trial's shards; nothing is set up, no split loaded."""
        from runyard.workloads.sl.preflight import run_checks

        device = training.training_device(context.parallel)
        channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        def make_inputs(manifest):
            normalize = training.normalizer_for(manifest).to(device)
            return lambda images: normalize(images).contiguous(memory_format=memory_format)

        sample = training.preflight_sample(context.data, device, make_inputs)

        def make_model(seed: int) -> torch.nn.Module:
            torch.manual_seed(seed)
            model = build_model(config, sample.num_classes, sample.inputs.shape[-1])
            return model.to(device, memory_format=memory_format)

        return run_checks(make_model, sample, batch_size=min(batch_size, config.batch_size),
                          seed=context.seed)



def use_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm as a SyncBatchNorm: under DDP the batch statistics are computed over
    all ranks' examples (worth it when each rank's batch is small). Outside DDP a
    SyncBatchNorm computes exactly what BatchNorm does; torch syncs on GPUs only."""
    if device.type != "cuda" and training.rank_and_world()[1] > 1:
        raise ValueError("config.sync_batchnorm: torch's SyncBatchNorm runs on GPUs only, and "
                         "these DDP workers are on the CPU; set sync_batchnorm: false")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def build_model(config: ConvNetConfig, num_classes: int, image_size: int) -> torch.nn.Module:
    return nets.build_convnet(config.arch, config.depth, config.width, num_classes, image_size,
                              config.stem, config.stages, config.dropout)
