"""sl.linear and sl.convnet trained for real on tiny data, standalone (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext
from runyard.workloads.sl.convnet import ConvNetClassifier
from runyard.workloads.sl.linear import LinearClassifier

TINY_WRN = dict(arch="wrn", depth=10, width=0.5, batch_size=32, lr=0.05, base_batch_size=None)


def run(workload_cls, config, context, steps):
    workload = workload_cls()
    workload.setup(workload_cls.Config(**config), context)
    history = [workload.step() for _ in range(steps)]
    return workload, history


def test_registry_has_convnet():
    assert get("sl.convnet") is ConvNetClassifier


def test_linear_on_digits_beats_the_majority_class(tmp_path):
    workload, history = run(LinearClassifier, {}, WorkloadContext(seed=0), steps=3)
    labels = workload.data.val.labels.numpy()
    majority = np.bincount(labels).max() / len(labels)
    assert history[-1]["val_top1"] > majority + 0.5
    assert set(history[-1]) == set(LinearClassifier.metrics)
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]  # a step is an epoch by default
    workload.artifacts(tmp_path)  # the same figures as on shards
    for name in ("templates.png", "prediction_dynamics.png", "misclassified.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_convnet_beats_linear_where_spatial_structure_matters(synth_shards, tmp_path):
    context = WorkloadContext(seed=0, data={"path": str(synth_shards)}, workdir=tmp_path)
    convnet, conv_history = run(ConvNetClassifier, TINY_WRN, context, steps=3)
    linear, linear_history = run(LinearClassifier, dict(batch_size=32, optimizer="adam", lr=1e-3,
                                                        init_std=1e-3), context, steps=3)
    conv, lin = conv_history[-1], linear_history[-1]
    assert set(conv) == set(ConvNetClassifier.metrics)
    assert conv["val_top1"] >= 0.9, conv_history
    assert conv["val_top1"] > lin["val_top1"] + 0.2, (conv_history, linear_history)
    convnet.artifacts(tmp_path)
    linear.artifacts(tmp_path)
    for name in ("prediction_dynamics.png", "prediction_dynamics.npz", "misclassified.png",
                 "templates.png"):
        assert (tmp_path / name).stat().st_size > 0
    dynamics = np.load(tmp_path / "prediction_dynamics.npz")
    assert dynamics["true_prob"].shape == (3, 16)


def resumes_exactly(workload_cls, config, context, tmp_path, steps: int, saved_after: int) -> list:
    """Steps after a save and a restore into a fresh workload equal those of a run that went
    on; returns the uninterrupted run's history."""
    uninterrupted, history = run(workload_cls, config, context, steps=steps)
    first, _ = run(workload_cls, config, context, steps=saved_after)
    first.save(tmp_path)
    resumed = workload_cls()
    resumed.setup(workload_cls.Config(**config), context)
    resumed.restore(tmp_path)
    for expected in history[saved_after:]:
        actual = resumed.step()
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "epoch"):
            assert actual[key] == expected[key], key
    for a, b in zip(uninterrupted.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    return history


@pytest.mark.parametrize("workload_cls,config", [
    pytest.param(ConvNetClassifier, dict(TINY_WRN, batches_per_step=3, schedule="cosine", epochs=2,
                             warmup_epochs=0.3, label_smoothing=0.1, dropout=0.1,
                             augment="flip_crop"),
                 marks=pytest.mark.slow),
    (LinearClassifier, dict(batch_size=32, batches_per_step=3, preprocess="center",
                            lr=1e-7, init_std=1e-4, weight_decay=100.0)),
])
def test_checkpoint_mid_epoch_resumes_exactly(synth_shards, tmp_path, workload_cls, config):
    # 3 batches per step: steps end mid-epoch (10 batches per epoch), so the data position,
    # schedule clock, dropout generator and optimizer state must all be restored.
    context = WorkloadContext(seed=3, data={"path": str(synth_shards), "val_batches": 1})
    resumes_exactly(workload_cls, config, context, tmp_path, steps=5, saved_after=2)


def test_linear_on_digits_resumes_mid_epoch_exactly(tmp_path):
    # 45 batches of 32 per epoch, 7 per step: most steps end mid-epoch.
    history = resumes_exactly(LinearClassifier, dict(batch_size=32, batches_per_step=7),
                              WorkloadContext(seed=3), tmp_path, steps=9, saved_after=4)
    assert history[-1]["epoch"] == pytest.approx(63 / 45)


def test_learning_rate_schedules_and_linear_scaling(synth_shards):
    context = WorkloadContext(seed=0, data={"path": str(synth_shards)})
    workload = ConvNetClassifier()
    workload.setup(ConvNetClassifier.Config(**dict(TINY_WRN, lr=0.1, base_batch_size=16,
                                                   schedule="step", milestones=[1, 2],
                                                   warmup_epochs=1, epochs=3)), context)
    per_epoch = len(workload.data.train)
    assert workload.peak_lr == pytest.approx(0.2)  # 0.1 * 32 / 16
    assert workload.lr_at(0) == pytest.approx(0.2 / per_epoch)  # warm-up starts near 0
    assert workload.lr_at(per_epoch - 1) == pytest.approx(0.2)
    assert workload.lr_at(per_epoch) == pytest.approx(0.02)
    assert workload.lr_at(2 * per_epoch) == pytest.approx(0.002)
    cosine = ConvNetClassifier()
    cosine.setup(ConvNetClassifier.Config(**dict(TINY_WRN, schedule="cosine", epochs=2)), context)
    assert cosine.lr_at(per_epoch) == pytest.approx(0.025)  # half way: half the rate
    assert cosine.lr_at(2 * per_epoch) == pytest.approx(0.0)


def test_flip_crop_augmentation_moves_pixels_but_keeps_them(synth_shards):
    workload = ConvNetClassifier()
    workload.setup(ConvNetClassifier.Config(**dict(TINY_WRN, augment="flip_crop")),
                   WorkloadContext(seed=0, data={"path": str(synth_shards)}))
    images, _ = next(workload.data.train.batches(0))
    x = workload.inputs(images)
    augmented = workload.augmented(x)
    assert augmented.shape == x.shape and not torch.equal(augmented, x)
    # A crop of a reflect-padded image only reuses the image's own pixel values.
    for original, moved in zip(x[:4], augmented[:4]):
        assert torch.isin(moved.flatten(), original.flatten()).all()


def test_spec_and_input_problems_name_the_field(tmp_path):
    missing = WorkloadContext(data={"path": str(tmp_path / "nowhere")})
    config = ConvNetClassifier.Config()
    assert ConvNetClassifier.check_spec(config, missing) == []  # validates on any machine
    assert ConvNetClassifier.check_inputs(config, missing)[0].startswith("data.path:")
    assert ConvNetClassifier.check_spec(config, WorkloadContext(data={"source": "digits"}))[0] \
        .startswith("data.path:")
    bad = ConvNetClassifier.check_spec(ConvNetClassifier.Config(arch="wrn", depth=11),
                                       WorkloadContext(data={"path": "x"}))
    assert any(p.startswith("config.depth:") for p in bad)
