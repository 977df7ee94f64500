"""Preflight: the checks of "A Recipe for Training Neural Networks", run before a long job.

Each check trains or probes fresh copies of the model (built by `make_model(seed)`) on a
little real data, in plain torch, and returns a CheckResult. A bug that silently ruins a
week of GPU time (labels misaligned with images, a reshape that mixes examples, an init that
is off by orders of magnitude) fails one of these in seconds:

- init_loss: softmax loss at init should be -log(1/classes) (all classes equally likely).
- overfit_one_batch: a model that cannot drive the loss on a handful of examples to ~0 has a
  bug (or no capacity); nothing else is worth looking at until it can.
- input_independent_baseline: trained on real inputs, the model must predict held-out labels
  better than the same model trained on zeroed inputs (which can learn class priors only).
  Fails when labels do not belong to their images.
- batch_independence: the gradient of example i's output must reach input i only (in eval
  mode; batch norm in train mode mixes examples by design). Fails on reshapes/views that
  mix the batch dimension.
- same_seed_same_losses: two runs from one seed produce the same first losses.
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


def check_overfit_one_batch(make_model, inputs, labels, seed, batch_size, steps=300,
                            lr=3e-3, threshold=0.05) -> CheckResult:
    torch.manual_seed(seed)
    model = make_model(seed)
    count = min(batch_size, 8, len(labels))
    losses = _train(model, inputs[:count], labels[:count], steps, count, lr, seed,
                    stop_below=threshold / 5)
    final = min(losses[-10:])
    return CheckResult(
        "overfit_one_batch", final <= threshold, final, f"<= {threshold}",
        f"Adam (lr {lr}) on {count} training examples for up to {steps} steps should memorise them. "
        "If it cannot, the model, loss or optimizer wiring is broken; fix that first.")


def check_input_independent_baseline(make_model, inputs, labels, held_inputs, held_labels,
                                     seed, batch_size, steps=150, lr=1e-3) -> CheckResult:
    held_loss = {}
    for name, train_inputs, eval_inputs in (("real", inputs, held_inputs),
                                            ("zeroed", torch.zeros_like(inputs), torch.zeros_like(held_inputs))):
        torch.manual_seed(seed)
        model = make_model(seed)
        _train(model, train_inputs, labels, steps, batch_size, lr, seed)
        model.eval()
        with torch.no_grad():
            held_loss[name] = F.cross_entropy(model(eval_inputs), held_labels).item()
    margin = 0.05 * held_loss["zeroed"]
    return CheckResult(
        "input_independent_baseline", held_loss["real"] < held_loss["zeroed"] - margin,
        held_loss["real"], f"< {held_loss['zeroed'] - margin:.3f} (zeroed inputs: {held_loss['zeroed']:.3f})",
        f"Trained {steps} steps on {len(labels)} examples, the held-out loss with real inputs "
        "must beat the same model fed zeros. If not, the inputs carry no usable signal about "
        "the labels: check that labels belong to their images, and the preprocessing.")


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


def run_preflight(make_model: Callable[[int], torch.nn.Module], inputs: torch.Tensor,
                  labels: torch.Tensor, held_inputs: torch.Tensor, held_labels: torch.Tensor,
                  num_classes: int, *, batch_size: int = 32, seed: int = 0) -> list[CheckResult]:
    """All checks. inputs/labels: a few hundred training examples, already normalised as the
    model expects, on the model's device; held_inputs/held_labels: validation examples."""
    # Memorising a batch drives activations and Adam's moments into denormal floats, which
    # make CPU arithmetic 10-20x slower; flushing them to zero changes no check's outcome.
    torch.set_flush_denormal(True)
    return [
        check_init_loss(make_model, inputs[:batch_size], labels[:batch_size], num_classes, seed),
        check_overfit_one_batch(make_model, inputs, labels, seed, batch_size),
        check_input_independent_baseline(make_model, inputs, labels, held_inputs, held_labels,
                                          seed, batch_size),
        check_batch_independence(make_model, inputs, seed, batch_size),
        check_same_seed(make_model, inputs, labels, seed, batch_size),
    ]


def preflight_workload(workload_cls, config, context) -> list[CheckResult]:
    """Set up a workload (sl.linear or sl.convnet) and run its preflight checks."""
    workload = workload_cls()
    workload.setup(config, context)
    try:
        return workload.preflight()
    finally:
        workload.close()
