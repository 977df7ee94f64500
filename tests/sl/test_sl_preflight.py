"""Preflight passes on the shipped workloads, including the seed's 1000-class ImageNet64 linear
sweep, and catches the bugs the Recipe warns about on digits and on 1000 classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from runyard.data import sample as data_sample
from runyard.data.shards import start_plan, write_manifest, write_shard
from runyard.spec import load_spec
from runyard.workloads.base import WorkloadContext
from runyard.workloads.blocks import ShardsData
from runyard.workloads.sl import training
from runyard.workloads.sl.convnet import ConvNetClassifier
from runyard.workloads.sl.datasets import load_dataset
from runyard.workloads.sl.linear import LinearClassifier
from runyard.workloads.sl.nets import LinearModel
from runyard.workloads.sl.preflight import PreflightSample, preflight_workload, run_checks

JOBS = Path(__file__).resolve().parents[2] / "jobs"
CHECKS = {"init_loss", "overfit_one_batch", "input_independent_baseline", "batch_independence",
          "same_seed_same_losses"}
CLASSES, SIDE = 1000, 16


def by_name(results):
    return {result.name: result for result in results}


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory):
    """1000 classes, each a fixed 16x16 colour template plus heavy pixel noise (template std
    20, noise std 60: one image alone is a poor guess of its template, as on ImageNet);
    4 training and 2 validation images per class, in shuffled shards of 500."""
    root = tmp_path_factory.mktemp("thousand") / "shards"
    rng = np.random.default_rng(7)
    templates = 128 + 20 * rng.standard_normal((CLASSES, SIDE, SIDE, 3))
    start_plan(root, {"kind": "test-templates"}, overwrite=False)
    receipts = []
    for split, per_class in (("train", 4), ("val", 2)):
        labels = rng.permutation(np.repeat(np.arange(CLASSES), per_class))
        pixels = templates[labels] + 60 * rng.standard_normal((len(labels), SIDE, SIDE, 3))
        images = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        for number, first in enumerate(range(0, len(labels), 500)):
            receipts.append(write_shard(root, f"{split}-{number:05d}.parquet", split,
                                        images[first:first + 500], labels[first:first + 500],
                                        CLASSES))
    names = [f"n{c:08d}" for c in range(CLASSES)]
    write_manifest(root, receipts, names, names, (SIDE, SIDE, 3), {"kind": "test-templates"})
    return root


def seed_sweep(path):
    """The shipped ImageNet64 linear sweep's base config and data block, on `path`."""
    spec = load_spec(JOBS / "imagenet64_linear_sweep.yaml")
    config = LinearClassifier.Config(**spec.config)
    assert (config.init_std, config.lr, config.weight_decay) == (1e-4, 1e-7, 100.0)
    data = {**spec.data.model_dump(mode="json"), "path": str(path)}
    return config, WorkloadContext(seed=spec.seed, data=data)


def test_the_seeds_1000_class_sweep_passes_on_well_formed_data(thousand_classes):
    config, context = seed_sweep(thousand_classes)
    assert context.data.resident is True  # preflight must not load the split anyway
    results = by_name(preflight_workload(LinearClassifier, config, context))
    assert set(results) == CHECKS
    failed = [r for r in results.values() if not r.passed]
    assert not failed, failed


def thousand_class_sample(path):
    sample = training.preflight_sample(
        ShardsData(path=str(path)), torch.device("cpu"),
        lambda manifest: training.normalizer_for(manifest, center_only=True).hwc)
    assert len(sample.labels) == 2 * CLASSES and len(sample.held_labels) == CLASSES
    assert sample.labels.bincount(minlength=CLASSES).min() == 2
    return sample


def digits_sample():
    data = load_dataset(None)
    return PreflightSample(data.x_train[:520], data.y_train[:520], data.x_val, data.y_val, 10)


class BatchMixingReshape(torch.nn.Module):
    """A classic bug: reshaping N x H x W x C as H x N x ... and transposing back."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        n, h, w, c = x.shape
        return self.model(x.reshape(h, n, w, c).transpose(0, 1))


def linear_factory(features, classes, init_std, wrapper=None):
    def make_model(seed):
        model = LinearModel(features, classes, init_std, torch.Generator().manual_seed(seed))
        return model if wrapper is None else wrapper(model)
    return make_model


@pytest.fixture(scope="module", params=["digits", "1000 classes"])
def dataset(request, thousand_classes):
    """(sample, features, classes, a good init std) for the planted-bug tests."""
    if request.param == "digits":
        return digits_sample(), 64, 10, 1e-2
    config, _ = seed_sweep(thousand_classes)
    return thousand_class_sample(thousand_classes), SIDE * SIDE * 3, CLASSES, config.init_std


def test_catches_labels_shuffled_relative_to_images(dataset):
    sample, features, classes, init_std = dataset
    shuffled = sample.labels[torch.randperm(len(sample.labels),
                                            generator=torch.Generator().manual_seed(0))]
    results = by_name(run_checks(linear_factory(features, classes, init_std),
                                 dataclasses.replace(sample, labels=shuffled)))
    assert not results["input_independent_baseline"].passed, results["input_independent_baseline"]
    assert results["init_loss"].passed and results["batch_independence"].passed


def test_catches_a_batch_mixing_reshape(dataset):
    sample, features, classes, init_std = dataset
    results = by_name(run_checks(linear_factory(features, classes, init_std, BatchMixingReshape),
                                 sample))
    assert not results["batch_independence"].passed
    assert results["batch_independence"].measured > 0


def test_catches_a_badly_scaled_init(dataset):
    sample, features, classes, init_std = dataset
    results = by_name(run_checks(linear_factory(features, classes, init_std * 100), sample))
    assert not results["init_loss"].passed
    assert results["init_loss"].measured > 2 * np.log(classes)


def test_preflight_passes_on_linear_digits():
    results = by_name(preflight_workload(LinearClassifier, LinearClassifier.Config(),
                                         WorkloadContext(seed=0)))
    assert set(results) == CHECKS
    failed = [r for r in results.values() if not r.passed]
    assert not failed, failed
    assert all(r.explanation and r.expected for r in results.values())


def test_class_balanced_sample_reads_only_what_it_needs(thousand_classes):
    images, labels = data_sample.class_balanced_sample(thousand_classes, "train", 3)
    assert np.bincount(labels, minlength=CLASSES).tolist() == [3] * CLASSES
    capped, capped_labels = data_sample.class_balanced_sample(thousand_classes, "train", 3,
                                                              max_read=700)
    assert len(capped_labels) == len(capped) <= 700
    assert np.bincount(capped_labels).max() <= 3


@pytest.mark.slow
def test_preflight_passes_on_convnet(synth_shards):
    results = ConvNetClassifier.preflight_checks(
        ConvNetClassifier.Config(arch="wrn", depth=10, width=0.5, batch_size=32),
        WorkloadContext(seed=0, data={"path": str(synth_shards), "resident": True}))
    failed = [r for r in results if not r.passed]
    assert not failed, failed
