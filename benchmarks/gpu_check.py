"""The supervised GPU check: what sl.linear and sl.convnet do per batch on a GPU, timed, with
torch as the only dependency (a lent GPU machine may have no Ray, MLflow, pydantic or pyarrow,
and another torch). Run it through gpu_check.sh (a 5-minute limit); figures go to BENCHMARKS.md.

    benchmarks/gpu_check.sh                                   # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --tiny        # smoke test anywhere (2 min on 2 busy cores)

It makes a few thousand synthetic 64x64 images (1000 class templates plus pixel noise) in
memory, then times, after warm-up and with one host sync per timed run:

- the seed's linear classifier (sl.linear: 12,288 inputs x 1000 classes, init std 1e-4, SGD
  lr 1e-7 momentum 0.9, weight decay 100 on centred pixels, batch 256) for one epoch of them;
- WRN-36-2 with 4 stages (jobs/imagenet64_wrn.yaml: SGD lr 0.01, momentum 0.9, weight decay
  5e-4, batch 128, channels-last) for 300 steps, under bf16 autocast (+TF32) and in fp32;

each from resident data (uint8 on the GPU, a batch is one index_select) and streamed data
(uint8 in host memory, gathered into pinned memory and copied without blocking), as
runyard.data.ShardLoader does. It checks that bf16's loss curve follows fp32's and that CUDA
RNG state restores, and prints one table. The models are runyard's own (nets.py, loaded by
path: it imports torch only); the training step is the workloads' step, restated here.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

NETS = Path(__file__).resolve().parents[1] / "platform" / "runyard" / "workloads" / "sl" / "nets.py"
IMAGENET_TRAIN = 1_281_167


def load_nets():
    """nets.py by its path, without importing the runyard package (pydantic may be missing).
    Its one runyard import, the plain-data archs.py beside it, is loaded the same way first."""
    archs = _load_by_path("runyard.workloads.sl.archs", NETS.with_name("archs.py"))
    sys.modules["runyard.workloads.sl.archs"] = archs
    return _load_by_path("runyard_sl_nets", NETS)


def _load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_images(count: int, classes: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x side x side x 3 and labels: class templates (std 30) plus noise (std 50)."""
    generator = torch.Generator().manual_seed(0)
    templates = 128 + 30 * torch.randn(classes, side, side, 3, generator=generator)
    labels = torch.randint(classes, (count,), generator=generator)
    images = torch.empty(count, side, side, 3, dtype=torch.uint8)
    for first in range(0, count, 1024):  # in chunks: float copies of all images would be 4x
        chunk = labels[first:first + 1024]
        noisy = templates[chunk] + 50 * torch.randn(len(chunk), side, side, 3, generator=generator)
        images[first:first + len(chunk)] = noisy.clamp(0, 255).round().to(torch.uint8)
    return images, labels


class Batches:
    """Batches in a seeded order that cycles through the data: resident (on the device,
    index_select) or streamed (host memory -> pinned buffer -> non-blocking copy)."""

    def __init__(self, images, labels, device, resident: bool, batch_size: int):
        self.device, self.resident, self.batch_size = device, resident, batch_size
        self.pin = device.type == "cuda" and not resident
        target = device if resident else torch.device("cpu")
        self.images, self.labels = images.to(target), labels.to(target)
        self.order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1)).to(target)
        self.position = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self.order):
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        if self.resident:
            return self.images.index_select(0, index), self.labels.index_select(0, index)
        images = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
        torch.index_select(self.images, 0, index, out=images)
        labels = self.labels.index_select(0, index)
        return (images.to(self.device, non_blocking=self.pin),
                labels.to(self.device, non_blocking=self.pin))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def linear_epoch(nets, batches: Batches, classes: int, warmup: int) -> dict:
    """sl.linear's step: one forward for loss and accuracy, sums on the device."""
    device = batches.device
    features = batches.images[0].numel()
    model = nets.LinearModel(features, classes, 1e-4, torch.Generator().manual_seed(0)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0.9)
    mean = batches.images[:1024].float().mean(dim=(0, 1, 2)).to(device)
    set_tf32(False)  # sl.linear trains in plain fp32

    def train(images, labels):
        scores = model(images.float() - mean)
        loss = F.cross_entropy(scores, labels) + 50.0 * model.weight.pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach() * len(labels), (scores.argmax(1) == labels).sum().float()])

    for _ in range(warmup):
        train(*batches.next())
    steps = len(batches.order) // batches.batch_size
    synchronize(device)
    start = time.perf_counter()
    sums = torch.zeros(2, device=device)
    for _ in range(steps):
        sums += train(*batches.next())
    loss_sum, _ = sums.tolist()  # the one host sync
    elapsed = time.perf_counter() - start
    seen = steps * batches.batch_size
    return {"steps": steps, "images_per_s": seen / elapsed, "ms_per_step": 1e3 * elapsed / steps,
            "loss": loss_sum / seen}


def wrn_steps(nets, batches: Batches, classes: int, precision: str, steps: int, warmup: int,
              depth: int, width: float) -> dict:
    """sl.convnet's step: channels-last on GPU, bf16 autocast (+TF32) or plain fp32."""
    device = batches.device
    torch.manual_seed(0)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = nets.build_convnet("wrn", depth, width, classes, batches.images.shape[1], "auto", 4, 0.0)
    model = model.to(device, memory_format=memory_format)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                                 {"params": rest, "weight_decay": 0.0}], lr=0.01, momentum=0.9)
    bf16 = precision == "bf16"
    set_tf32(bf16)
    sample = batches.images[:1024].float()
    mean = sample.mean(dim=(0, 1, 2)).to(device)
    std = sample.std(dim=(0, 1, 2)).to(device)
    model.train()

    def train(images, labels):
        x = ((images.float() - mean) / std).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            scores = model(x)
        loss = F.cross_entropy(scores.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    losses = [train(*batches.next()) for _ in range(warmup)]
    synchronize(device)
    start = time.perf_counter()
    losses += [train(*batches.next()) for _ in range(steps)]
    curve = torch.stack(losses).tolist()  # the one host sync
    elapsed = time.perf_counter() - start
    return {"steps": steps, "images_per_s": steps * batches.batch_size / elapsed,
            "ms_per_step": 1e3 * elapsed / steps, "loss": sum(curve[-10:]) / len(curve[-10:]),
            "curve": curve}


def curves_agree(bf16: list[float], fp32: list[float], window: int, classes: int,
                 tolerance: float) -> tuple[bool, float]:
    """Largest gap between the two loss curves' means over consecutive windows, relative to
    fp32's (but to at least a tenth of the loss at init, log(classes): once a curve nears 0,
    a few hundredths of a nat are no sign of bad numerics)."""
    floor = 0.1 * math.log(classes)
    gaps = []
    for first in range(0, len(fp32) - window + 1, window):
        a = sum(bf16[first:first + window]) / window
        b = sum(fp32[first:first + window]) / window
        gaps.append(abs(a - b) / max(abs(b), floor))
    worst = max(gaps)
    return worst <= tolerance, worst


def rng_restores(device: torch.device) -> bool:
    """What a checkpoint does with the global and a device generator: save, draw, restore, draw."""
    generator = torch.Generator(device).manual_seed(3)
    saved_global = torch.cuda.get_rng_state_all() if device.type == "cuda" else torch.get_rng_state()
    saved_generator = generator.get_state()
    first = (torch.rand(4, device=device), torch.rand(4, generator=generator, device=device))
    if device.type == "cuda":
        torch.cuda.set_rng_state_all(saved_global)
    else:
        torch.set_rng_state(saved_global)
    generator.set_state(saved_generator)
    again = (torch.rand(4, device=device), torch.rand(4, generator=generator, device=device))
    return all(torch.equal(a, b) for a, b in zip(first, again))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-test sizes: 256 images, 10 classes, WRN-12-0.5, 4 steps")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--wrn-steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="bf16 vs fp32: largest relative gap of windowed mean losses")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible (pass --device cpu --tiny for a smoke test)",
              file=sys.stderr)
        return 2
    depth, width, wrn_batch, window = 36, 2.0, 128, 50
    if args.tiny:
        args.images, args.classes, args.wrn_steps, args.warmup = 256, 10, 4, 1
        depth, width, wrn_batch, window = 12, 0.5, 8, 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as sl.convnet does: fixed batch shapes
    nets = load_nets()
    started = time.perf_counter()
    images, labels = synthetic_images(args.images, args.classes, 64)
    rows, curves = [], {}
    for resident in (True, False):
        data = "resident" if resident else "streamed"
        batches = Batches(images, labels, device, resident, 256)
        result = linear_epoch(nets, batches, args.classes, warmup=3)
        rows.append(("linear 64x64 (seed)", data, "fp32", result))
        for precision in ("bf16", "fp32"):
            batches = Batches(images, labels, device, resident, wrn_batch)
            result = wrn_steps(nets, batches, args.classes, precision, args.wrn_steps, args.warmup,
                               depth, width)
            rows.append((f"WRN-{depth}-{width:g} 64x64", data, precision, result))
            if resident:
                curves[precision] = result["curve"]
    agree, gap = curves_agree(curves["bf16"], curves["fp32"], window, args.classes, args.tolerance)
    rng_ok = rng_restores(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\ndevice: {name}; torch {torch.__version__}; {args.images} synthetic 64x64 images, "
          f"{args.classes} classes; {time.perf_counter() - started:.0f} s in all")
    print(f"{'workload':22s} {'data':9s} {'precision':9s} {'steps':>6s} {'images/s':>10s} "
          f"{'ms/step':>8s} {'loss':>7s} {'ImageNet epoch s':>17s}")
    for workload, data, precision, result in rows:
        epoch = IMAGENET_TRAIN / result["images_per_s"]
        print(f"{workload:22s} {data:9s} {precision:9s} {result['steps']:6d} "
              f"{result['images_per_s']:10.0f} {result['ms_per_step']:8.2f} {result['loss']:7.3f} "
              f"{epoch:17.0f}")
    print(f"bf16 vs fp32 loss curve (resident, windows of {window} steps): largest gap "
          f"{100 * gap:.2f}% (tolerance {100 * args.tolerance:g}%): {'PASS' if agree else 'FAIL'}")
    print(f"RNG state save/restore on {device.type}: {'PASS' if rng_ok else 'FAIL'}")
    print("ImageNet epoch s: 1,281,167 images at the measured rate (timed after warm-up).")
    return 0 if agree and rng_ok else 1


if __name__ == "__main__":
    sys.exit(main())
