"""What sl.linear and sl.convnet share when they train on prepared shards.

- distributed: if torch.distributed is initialized (Ray Train, torchrun), this process is one
  DDP rank: it reads its own slice of the data and gradients are averaged by
  DistributedDataParallel; otherwise it is a plain single process. The backend is the
  caller's choice (gloo on CPU, NCCL on GPU).
- ShardData: the train/val loaders for this rank plus the per-channel normalizer.
- BatchCursor: the position (epoch, batch) in the training stream, so a step can be one epoch
  or a fixed number of batches and a checkpoint resumes mid-epoch exactly.
- evaluate: loss, top-1 and top-5 over the validation split, summed over ranks.
- PredictionDynamics / save_misclassified_grid: the Recipe's "visualize prediction dynamics"
  on a fixed validation batch, and the images the model gets wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from runyard.data import Normalizer, ShardLoader, dataset_dir, load_manifest
from runyard.workloads.blocks import ShardsData


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def training_device(parallel: dict[str, Any] | None = None) -> torch.device:
    """This rank's device. The executor may decide it: context.parallel["device"], a device
    or a function returning one (under Ray Train: ray.train.torch.get_device). Otherwise
    the GPU numbered LOCAL_RANK (torchrun) if it is visible, else the current GPU, else CPU."""
    chosen = (parallel or {}).get("device")
    if chosen is not None:
        device = torch.device(chosen() if callable(chosen) else chosen)
    elif torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", -1))
        index = local_rank if 0 <= local_rank < torch.cuda.device_count() else torch.cuda.current_device()
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # so NCCL and bare .cuda() calls use this rank's GPU
        # Every training batch has the same shape (drop_last), so cuDNN's one-off autotuning
        # per shape pays for itself within the first epoch.
        torch.backends.cudnn.benchmark = True
    return device


def use_tf32(enabled: bool) -> None:
    """TF32 (10-bit mantissa) for float32 matmuls and convolutions on Ampere and later GPUs,
    ~8x the float32 rate. Right for training under bf16 autocast, whose float32 leftovers
    need no more precision than bf16 itself; off where a config asks for exact fp32."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def wrap_distributed(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel when this process is a DDP rank; the model itself otherwise."""
    if rank_and_world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over all ranks (the values themselves in a single process)."""
    if rank_and_world()[1] == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class ShardData:
    """Loaders for this rank over a prepared dataset (`data: {path: ...}`).

    global_batch_size is split evenly over the ranks; normalisation (per-channel mean/std of
    the training split, from the manifest) happens on `device`."""

    def __init__(self, data: ShardsData, seed: int, global_batch_size: int,
                 device: torch.device, center_only: bool = False):
        rank, world = rank_and_world()
        if global_batch_size % world:
            raise ValueError(f"config.batch_size {global_batch_size} is not divisible by the "
                             f"{world} DDP workers; choose a multiple of {world}")
        folder = dataset_dir(data.path)  # a dataset in storage: this node's copy
        self.manifest = load_manifest(folder)
        per_rank = global_batch_size // world
        common = dict(seed=seed, rank=rank, world_size=world, resident=data.resident,
                      device=device, pin_memory=device.type == "cuda", manifest=self.manifest)
        self.train = ShardLoader(folder, "train", per_rank, shuffle=True,
                                 shuffle_buffer=data.shuffle_buffer, **common)
        self.val = ShardLoader(folder, "val", per_rank, shuffle=False, **common)
        self.val_batches = data.val_batches
        if len(self.train) == 0:
            raise ValueError(f"data.path: {data.path} has {self.train.num_examples} training "
                             f"images per worker, fewer than one batch of {per_rank}")
        self.normalize = normalizer_for(self.manifest, center_only).to(device)
        self.num_classes = len(self.manifest["classes"])
        self.image_shape = tuple(self.manifest["image_shape"])
        self.class_names = list(self.manifest["class_names"])


def normalizer_for(manifest: dict[str, Any], center_only: bool = False) -> Normalizer:
    """(x - mean) / std per channel with the training split's statistics; center_only keeps
    the 0..255 scale (the linear-classifier seed's preprocessing)."""
    std = [1.0, 1.0, 1.0] if center_only else manifest["pixel_std"]
    return Normalizer(manifest["pixel_mean"], std)


def preflight_sample(data: ShardsData, device: torch.device,
                     make_inputs: Callable[[dict[str, Any]], Callable[[torch.Tensor], torch.Tensor]]):
    """A bounded, class-balanced PreflightSample of a prepared dataset (preflight.sample_sizes
    examples per class from the first shards of train and val), never the whole split.
    make_inputs(manifest) returns the function from uint8 images on `device` to model inputs."""
    from runyard.data.sample import class_balanced_sample
    from runyard.workloads.sl.preflight import PreflightSample, sample_sizes

    folder = dataset_dir(data.path)
    manifest = load_manifest(folder)
    num_classes = len(manifest["classes"])
    to_inputs = make_inputs(manifest)
    parts: list[torch.Tensor] = []
    for split, per_class in zip(("train", "val"), sample_sizes(num_classes)):
        images, labels = class_balanced_sample(folder, split, per_class, manifest=manifest)
        parts += [to_inputs(torch.from_numpy(images).to(device)), torch.from_numpy(labels).to(device)]
    return PreflightSample(*parts, num_classes=num_classes)


class BatchCursor:
    """Walks the training loader across epochs; its state is (epoch, batch within epoch)."""

    def __init__(self, loader: ShardLoader):
        self.loader, self.epoch, self.batch = loader, 0, 0

    def take(self, count: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next `count` batches (None: the rest of the current epoch)."""
        remaining = len(self.loader) - self.batch if count is None else count
        while remaining > 0:
            for images, labels in self.loader.batches(self.epoch, start=self.batch):
                self.batch += 1
                remaining -= 1
                yield images, labels
                if remaining == 0:
                    break
            if self.batch >= len(self.loader):
                self.epoch, self.batch = self.epoch + 1, 0

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.batch / len(self.loader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: ShardLoader,
             device: torch.device, limit: int | None = None) -> dict[str, float]:
    """Mean loss, top-1 and top-5 accuracy over the validation split (all ranks). The sums
    stay on the device until the end: one host sync per evaluation, not three per batch."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1, top-5, count
    for index, (images, labels) in enumerate(loader.batches(0)):
        if limit is not None and index >= limit:
            break
        images, labels = images.to(device), labels.to(device, non_blocking=True)
        scores = forward(images).float()
        best = scores.topk(min(5, scores.shape[1]), dim=1).indices
        sums += torch.stack([F.cross_entropy(scores, labels, reduction="sum").double(),
                             (best[:, 0] == labels).sum().double(),
                             (best == labels[:, None]).any(1).sum().double(),
                             torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
    loss_sum, top1, top5, count = all_reduce_sum(sums.tolist(), device)
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": top1 / count, "top5": top5 / count}


class PredictionDynamics:
    """Softmax outputs on one fixed validation batch, recorded after every step: watching
    them move is how you see a model learn (or not) long before the accuracy does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.cpu(), labels.cpu()
        self.steps: list[int] = []
        self.true_prob: list[np.ndarray] = []   # p(correct class) per image
        self.predicted: list[np.ndarray] = []   # argmax class per image

    @torch.no_grad()
    def record(self, step: int, scores: torch.Tensor) -> None:
        probs = scores.float().softmax(1).cpu()
        self.steps.append(step)
        self.true_prob.append(probs[torch.arange(len(self.labels)), self.labels].numpy())
        self.predicted.append(probs.argmax(1).numpy())

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "true_prob": [p.tolist() for p in self.true_prob],
                "predicted": [p.tolist() for p in self.predicted]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = list(state["steps"])
        self.true_prob = [np.asarray(p, dtype=np.float32) for p in state["true_prob"]]
        self.predicted = [np.asarray(p, dtype=np.int64) for p in state["predicted"]]

    def save(self, directory: Path, class_names: list[str]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.steps:
            return
        np.savez(directory / "prediction_dynamics.npz", steps=np.asarray(self.steps),
                 true_prob=np.stack(self.true_prob), predicted=np.stack(self.predicted),
                 labels=self.labels.numpy())
        count = len(self.labels)
        fig = plt.figure(figsize=(max(8, count * 0.7), 4.5))
        grid = fig.add_gridspec(2, count, height_ratios=[1, 2.5])
        for index in range(count):
            ax = fig.add_subplot(grid[0, index])
            ax.imshow(_displayable(self.images[index]))
            ax.axis("off")
            ax.set_title(f"{class_names[self.labels[index]][:9]}\n->{class_names[self.predicted[-1][index]][:9]}",
                         fontsize=6)
        ax = fig.add_subplot(grid[1, :])
        heat = ax.imshow(np.stack(self.true_prob).T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                         extent=(self.steps[0] - 0.5, self.steps[-1] + 0.5, count - 0.5, -0.5))
        ax.set_xlabel("step")
        ax.set_ylabel("fixed validation image")
        fig.colorbar(heat, ax=ax, label="p(correct class)")
        fig.savefig(directory / "prediction_dynamics.png", dpi=90)
        plt.close(fig)


def _displayable(image: torch.Tensor) -> np.ndarray:
    array = image.numpy()
    return array.squeeze(-1) if array.shape[-1] == 1 else array


@torch.no_grad()
def save_misclassified_grid(forward: Callable[[torch.Tensor], torch.Tensor], loader: ShardLoader,
                            device: torch.device, class_names: list[str], path: Path,
                            count: int = 25) -> int:
    """Up to `count` validation images the model gets wrong, titled true -> predicted.
    Returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong: list[tuple[np.ndarray, int, int]] = []
    for images, labels in loader.batches(0):
        predicted = forward(images.to(device)).argmax(1).cpu()
        for index in torch.nonzero(predicted != labels.cpu()).flatten().tolist():
            wrong.append((images[index].cpu().numpy(), int(labels[index]), int(predicted[index])))
        if len(wrong) >= count:
            break
    wrong = wrong[:count]
    if not wrong:
        return 0
    cols = min(5, len(wrong))
    rows = -(-len(wrong) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, label, predicted) in zip(axes.flat, wrong):
        ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image)
        ax.set_title(f"{class_names[label][:10]}\n-> {class_names[predicted][:10]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return len(wrong)
