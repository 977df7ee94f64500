"""Preflight: the checks of "A Recipe for Training Neural Networks", run before a long job.

Each check trains or probes fresh copies of the model (built by `make_model(seed)`) on a
little real data, in plain torch, and returns a CheckResult. A bug that silently ruins a
week of GPU time (labels misaligned with images, a reshape that mixes examples, an init that
is off by orders of magnitude) fails one of these in seconds:

- init_loss: softmax loss at init should be -log(1/classes) (all classes equally likely).
- overfit_one_batch: a model that cannot memorise a handful of examples (all right, loss a
  tenth of its init value) has a bug (or no capacity); nothing else is worth looking at
  until it can.
- input_independent_baseline: trained on real inputs, the model must rank held-out examples
  right more often than the same model trained on zeroed inputs (which can learn the class
  prior only), by more than binomial luck. Fails when labels do not belong to their images.
- batch_independence: the gradient of example i's output must reach input i only (in eval
  mode; batch norm in train mode mixes examples by design). Fails on reshapes/views that
  mix the batch dimension.
- same_seed_same_losses: two runs from one seed produce the same first losses.

Budgets and thresholds follow the dataset: the sample holds a few examples of *every* class
(`sample_sizes`; 2 training and 1 held-out per class for ImageNet's 1000), the baseline trains
for a few passes over it, and its threshold is a chance margin for that many held-out
examples and classes. The workloads read the sample from the first shards
(runyard.data.sample), never a resident split, and without setting themselves up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    measured: float
    expected: str
    explanation: str


def _train(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int,
           batch_size: int, lr: float, seed: int, stop_below: float = 0.0) -> list[float]:
    """Adam on (inputs, labels) in seeded minibatches; returns the loss of every step
    (stopping early once a loss is below `stop_below`)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = torch.randperm(len(labels), generator=generator)[:batch_size].to(labels.device)
        loss = F.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < stop_below:
            break
    return losses


def check_init_loss(make_model, inputs, labels, num_classes, seed) -> CheckResult:
    torch.manual_seed(seed)
    model = make_model(seed)
    with torch.no_grad():
        loss = F.cross_entropy(model(inputs), labels).item()
    expected = math.log(num_classes)
    tolerance = max(0.25, 0.1 * expected)
    return CheckResult(
        "init_loss", abs(loss - expected) <= tolerance, loss, f"{expected:.3f} ± {tolerance:.2f}",
        "At init every class should be about equally likely, so the loss is -log(1/classes). "
        "Far above: the init scale is off (logits too large); far below: a bug leaks labels.")


def check_overfit_one_batch(make_model, inputs, labels, num_classes, seed, batch_size,
                            steps=300, lr=3e-3) -> CheckResult:
    # "Memorised": every example right and the loss down to a tenth of its value at init,
    # -log(1/classes). A broken wiring (parameters the optimizer never sees, a loss on the
    # wrong tensor) leaves the loss near its init value; a fixed threshold such as 0.05
    # instead fails healthy nets that are merely slow in the tail.
    torch.manual_seed(seed)
    model = make_model(seed)
    count = min(batch_size, 8, len(labels))
    threshold = 0.1 * math.log(num_classes)
    losses = _train(model, inputs[:count], labels[:count], steps, count, lr, seed,
                    stop_below=threshold / 5)
    final = min(losses[-10:])
    model.eval()
    with torch.no_grad():
        correct = int((model(inputs[:count]).argmax(1) == labels[:count]).sum())
    return CheckResult(
        "overfit_one_batch", final <= threshold and correct == count, final,
        f"<= {threshold:.3f} with all {count} right (got {correct})",
        f"Adam (lr {lr}) on {count} training examples for up to {steps} steps should memorise them. "
        "If it cannot, the model, loss or optimizer wiring is broken; fix that first.")


def baseline_steps(examples: int, batch_size: int, epochs: int = 4) -> int:
    """Updates for the input-independent baseline: `epochs` passes over the sample, at least
    100 and at most 600 (enough for Adam to find the signal, few enough for a CPU)."""
    return min(600, max(100, math.ceil(epochs * examples / batch_size)))


def chance_margin(accuracy: float, num_classes: int, count: int, z: float = 4.0) -> float:
    """How far above `accuracy` a held-out accuracy must be, on `count` examples, before it
    is more than luck: z binomial standard deviations (z = 4: a false alarm in ~30,000 runs),
    and never less than 3 examples."""
    p = max(accuracy, 1.0 / num_classes)
    return max(z * math.sqrt(p * (1 - p) / count), 3.0 / count)


def check_input_independent_baseline(make_model, inputs, labels, held_inputs, held_labels,
                                     num_classes, seed, batch_size, lr=1e-3) -> CheckResult:
    # Held-out top-1, not loss: Adam on raw 0..255 pixels makes logits of tens to hundreds,
    # and the cross-entropy of such a model on unseen examples is dominated by its confident
    # mistakes (83 vs 6.9 for the zeroed model on the seed's 1000 classes) even where it
    # ranks the right class first far above chance. Accuracy does not depend on the logits'
    # scale, and the zeroed model's accuracy is that of the class prior alone.
    steps = baseline_steps(len(labels), batch_size)
    top1, held_loss = {}, {}
    for name, train_inputs, eval_inputs in (("real", inputs, held_inputs),
                                            ("zeroed", torch.zeros_like(inputs), torch.zeros_like(held_inputs))):
        torch.manual_seed(seed)
        model = make_model(seed)
        _train(model, train_inputs, labels, steps, batch_size, lr, seed)
        model.eval()
        with torch.no_grad():
            scores = model(eval_inputs).float()
        top1[name] = (scores.argmax(1) == held_labels).float().mean().item()
        held_loss[name] = F.cross_entropy(scores, held_labels).item()
    needed = top1["zeroed"] + chance_margin(top1["zeroed"], num_classes, len(held_labels))
    return CheckResult(
        "input_independent_baseline", top1["real"] > needed, top1["real"],
        f"held-out top-1 > {needed:.4f} (zeroed inputs: {top1['zeroed']:.4f}; held-out loss "
        f"{held_loss['real']:.2f} vs {held_loss['zeroed']:.2f})",
        f"Trained {steps} Adam steps on {len(labels)} examples of {num_classes} classes, the "
        f"model must rank more of {len(held_labels)} held-out examples right than the same "
        "model fed zeros (which can learn the class prior only), by more than luck. If not, "
        "the inputs carry no usable signal about the labels: check that labels belong to "
        "their images, and the preprocessing.")


def check_batch_independence(make_model, inputs, seed, batch_size, example=1) -> CheckResult:
    torch.manual_seed(seed)
    model = make_model(seed)
    model.eval()
    x = inputs[: max(2, min(batch_size, len(inputs)))].clone().requires_grad_(True)
    model(x)[example].sum().backward()
    others = torch.cat([x.grad[:example], x.grad[example + 1 :]])
    leak = others.abs().max().item()
    reached = x.grad[example].abs().max().item()
    return CheckResult(
        "batch_independence", leak == 0.0 and reached > 0.0, leak,
        "0 on every other example (and > 0 on example itself)",
        f"The gradient of example {example}'s output must reach input {example} only. Non-zero "
        "elsewhere means some view/reshape/transpose mixes examples across the batch.")


def check_same_seed(make_model, inputs, labels, seed, batch_size, steps=3) -> CheckResult:
    runs = []
    for _ in range(2):
        torch.manual_seed(seed)
        model = make_model(seed)
        runs.append(_train(model, inputs, labels, steps, batch_size, 1e-3, seed))
    difference = max(abs(a - b) for a, b in zip(*runs))
    tolerance = 0.0 if inputs.device.type == "cpu" else 1e-5 * max(abs(runs[0][0]), 1.0)
    return CheckResult(
        "same_seed_same_losses", difference <= tolerance, difference, f"<= {tolerance:g}",
        f"Two runs from seed {seed} must give the same first {steps} losses; otherwise some "
        "randomness escapes the seed and no experiment can be repeated.")


def sample_sizes(num_classes: int) -> tuple[int, int]:
    """(training, held-out) examples per class that preflight reads: every class is seen in
    training (with 256 examples and 1000 classes most held-out classes never were), about
    512 training and 256 held-out examples in all when classes are few."""
    return max(2, math.ceil(512 / num_classes)), max(1, math.ceil(256 / num_classes))


@dataclass(frozen=True)
class PreflightSample:
    """A bounded, class-balanced sample, normalised as the model expects, on its device."""

    inputs: torch.Tensor
    labels: torch.Tensor
    held_inputs: torch.Tensor
    held_labels: torch.Tensor
    num_classes: int


def run_checks(make_model: Callable[[int], torch.nn.Module], sample: PreflightSample, *,
               batch_size: int = 32, seed: int = 0) -> list[CheckResult]:
    """All five checks on fresh models from `make_model(seed)`."""
    # Memorising a batch drives activations and Adam's moments into denormal floats, which
    # make CPU arithmetic 10-20x slower; flushing them to zero changes no check's outcome.
    torch.set_flush_denormal(True)
    x, y, classes = sample.inputs, sample.labels, sample.num_classes
    return [
        check_init_loss(make_model, x[:batch_size], y[:batch_size], classes, seed),
        check_overfit_one_batch(make_model, x, y, classes, seed, batch_size),
        check_input_independent_baseline(make_model, x, y, sample.held_inputs, sample.held_labels,
                                         classes, seed, batch_size),
        check_batch_independence(make_model, x, seed, batch_size),
        check_same_seed(make_model, x, y, seed, batch_size),
    ]


def preflight_workload(workload_cls, config, context) -> list[CheckResult]:
    """The checks of sl.linear or sl.convnet for a config and context, without setting the
    workload up: they read a bounded sample of its data (never a resident split)."""
    return workload_cls.preflight_checks(config, context)
