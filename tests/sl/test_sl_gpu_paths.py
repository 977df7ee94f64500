"""The GPU code paths of sl.convnet that also run on a CPU: bf16 autocast, channels-last,
SyncBatchNorm conversion, and the RNG state a checkpoint carries on the device the workload
chooses. (Their GPU numerics and speed: benchmarks/gpu_check.sh.)"""

from __future__ import annotations

import pytest
import torch

from runyard.workloads.base import WorkloadContext
from runyard.workloads.sl.convnet import ConvNetClassifier
from runyard.workloads.sl.training import training_device

TINY_WRN = dict(arch="wrn", depth=10, width=0.5, batch_size=32, lr=0.05, base_batch_size=None,
                batches_per_step=2, precision="fp32", channels_last=False)
STEPS = 3  # 6 updates


def train(synth_shards, **overrides):
    workload = ConvNetClassifier()
    workload.setup(ConvNetClassifier.Config(**{**TINY_WRN, **overrides}),
                   WorkloadContext(seed=0, data={"path": str(synth_shards), "val_batches": 1}))
    return workload, [workload.step() for _ in range(STEPS)]


@pytest.fixture(scope="module")
def fp32_run(synth_shards):
    return train(synth_shards)


def test_bf16_autocast_follows_the_fp32_loss_curve(synth_shards, fp32_run):
    bf16, history = train(synth_shards, precision="bf16")
    assert bf16.bf16
    reference = [h["train_loss"] for h in fp32_run[1]]
    # bf16 keeps 8 bits of mantissa (relative rounding 0.4%); over 6 updates of a tiny WRN
    # the loss curve stays within 2% of fp32's, while the model does learn (the loss falls).
    assert [h["train_loss"] for h in history] == pytest.approx(reference, rel=0.02)
    assert [h["train_loss"] for h in history] != reference  # autocast did round to bf16
    assert reference[-1] < reference[0]


def test_channels_last_matches_contiguous_layout(synth_shards, fp32_run):
    channels_last, history = train(synth_shards, channels_last=True)
    assert channels_last.inputs(next(channels_last.data.train.batches(0))[0]) \
        .is_contiguous(memory_format=torch.channels_last)
    # Same arithmetic in another memory order: only float summation order differs.
    assert [h["train_loss"] for h in history] == pytest.approx(
        [h["train_loss"] for h in fp32_run[1]], rel=1e-4)
    for a, b in zip(channels_last.model.parameters(), fp32_run[0].model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)


def test_sync_batchnorm_converts_the_model_when_asked(synth_shards, fp32_run):
    synced, history = train(synth_shards, sync_batchnorm=True)
    norms = [m for m in synced.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in fp32_run[0].model.modules())
    # One process: a SyncBatchNorm computes what BatchNorm does.
    assert [h["train_loss"] for h in history] == pytest.approx(
        [h["train_loss"] for h in fp32_run[1]], rel=1e-6)


def test_rng_state_round_trips_on_the_device_the_workload_chose(synth_shards, tmp_path):
    workload = ConvNetClassifier()
    workload.setup(ConvNetClassifier.Config(**{**TINY_WRN, "augment": "flip_crop", "dropout": 0.2}),
                   WorkloadContext(seed=0, data={"path": str(synth_shards)}))
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert workload.device.type == expected.type
    assert workload.augment_rng.device.type == expected.type
    workload.step()
    workload.save(tmp_path)

    def draws():
        on_device = torch.rand(4, generator=workload.augment_rng, device=workload.device)
        return on_device.cpu(), torch.rand(4), (torch.rand(4, device="cuda").cpu()
                                                 if torch.cuda.is_available() else None)

    before = draws()
    workload.restore(tmp_path)
    after = draws()
    for a, b in zip(before, after):
        assert (a is None and b is None) or torch.equal(a, b)


def test_device_choice_follows_the_executor_then_local_rank(monkeypatch):
    assert training_device({"device": "cpu"}) == torch.device("cpu")
    assert training_device({"device": lambda: torch.device("cpu")}) == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun's first local process
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert training_device() == expected
