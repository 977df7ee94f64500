"""Preflight passes on the shipped workloads and catches the bugs the Recipe warns about."""

from __future__ import annotations

import pytest
import torch

from runyard.workloads.base import WorkloadContext
from runyard.workloads.sl.convnet import ConvNetClassifier
from runyard.workloads.sl.linear import LinearClassifier
from runyard.workloads.sl.nets import LinearModel
from runyard.workloads.sl.preflight import preflight_workload, run_preflight

CHECKS = {"init_loss", "overfit_one_batch", "input_independent_baseline", "batch_independence",
          "same_seed_same_losses"}


def by_name(results):
    return {result.name: result for result in results}


def test_preflight_passes_on_linear_digits():
    results = by_name(preflight_workload(LinearClassifier, LinearClassifier.Config(),
                                         WorkloadContext(seed=0)))
    assert set(results) == CHECKS
    failed = [r for r in results.values() if not r.passed]
    assert not failed, failed
    assert all(r.explanation and r.expected for r in results.values())


@pytest.mark.slow
def test_preflight_passes_on_convnet(synth_shards):
    workload = ConvNetClassifier()
    workload.setup(ConvNetClassifier.Config(arch="wrn", depth=10, width=0.5, batch_size=32),
                   WorkloadContext(seed=0, data={"path": str(synth_shards)}))
    results = workload.preflight(batch_size=16, examples=128)
    failed = [r for r in results if not r.passed]
    assert not failed, failed


def digits_batch():
    workload = LinearClassifier()
    workload.setup(LinearClassifier.Config(), WorkloadContext(seed=0))
    data = workload.data
    return data.x_train[:256], data.y_train[:256], data.x_val, data.y_val


def linear_factory(init_std=1e-2, wrapper=None):
    def make_model(seed):
        model = LinearModel(64, 10, init_std, torch.Generator().manual_seed(seed))
        return model if wrapper is None else wrapper(model)
    return make_model


def test_catches_labels_shuffled_relative_to_images():
    x, y, held_x, held_y = digits_batch()
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    results = by_name(run_preflight(linear_factory(), x, shuffled, held_x, held_y, 10))
    assert not results["input_independent_baseline"].passed
    assert results["init_loss"].passed and results["batch_independence"].passed


class BatchMixingReshape(torch.nn.Module):
    """A classic bug: reshaping N x H x W x C as H x N x ... and transposing back."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        n, h, w, c = x.shape
        return self.model(x.reshape(h, n, w, c).transpose(0, 1))


def test_catches_a_batch_mixing_reshape():
    x, y, held_x, held_y = digits_batch()
    results = by_name(run_preflight(linear_factory(wrapper=BatchMixingReshape), x, y, held_x,
                                    held_y, 10))
    assert not results["batch_independence"].passed
    assert results["batch_independence"].measured > 0


def test_catches_a_badly_scaled_init():
    x, y, held_x, held_y = digits_batch()
    results = by_name(run_preflight(linear_factory(init_std=1.0), x, y, held_x, held_y, 10))
    assert not results["init_loss"].passed
    assert results["init_loss"].measured > 5
