"""Fixtures for the supervised-learning tests: small ImageNet-layout data made on the spot."""

from __future__ import annotations

import pytest

from runyard.data.imagenet import prepare_imagenet
from runyard.data.synth import write_synthetic_imagenet


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory):
    """4 classes of oriented stripes, 80 training and 20 validation JPEGs each."""
    return write_synthetic_imagenet(tmp_path_factory.mktemp("synth") / "jpeg", classes=4,
                                    train_per_class=80, val_per_class=20, min_side=36,
                                    max_side=56, seed=0)


@pytest.fixture(scope="session")
def synth_shards(synth_tree, tmp_path_factory):
    """synth_tree prepared at 32x32 into shards of 100 images."""
    out = tmp_path_factory.mktemp("synth") / "shards32"
    prepare_imagenet(synth_tree, out, size=32, workers=1, images_per_shard=100)
    return out


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run many tiny steps; on a busy 2-core machine OpenMP threads spinning on
    each other cost more than they give, so every test here runs on one thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
