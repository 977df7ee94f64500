"""DDP with 2 CPU processes (gloo) matches 1 process fed the same global batches.

Each rank reads its own half of the data (ShardLoader rank/world_size; sl.linear holds its
half resident, sl.convnet streams it); the single-process
reference trains on the concatenation of both ranks' batches, so the two runs see the same
global batch at every update. Without batch norm (sl.linear) the updates are the same up to
float summation order; with batch norm (sl.convnet) each rank normalises with its own half's
statistics, so the losses agree only approximately.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from runyard.data import ShardLoader
from runyard.workloads.base import WorkloadContext
from runyard.workloads.sl.convnet import ConvNetClassifier
from runyard.workloads.sl.linear import LinearClassifier

STEPS = 3
CASES = {
    "linear": (LinearClassifier, dict(batch_size=32, batches_per_step=1, optimizer="sgd",
                                      lr=0.05, init_std=1e-3, weight_decay=1e-3), True),
    "convnet": (ConvNetClassifier, dict(arch="wrn", depth=10, width=0.5, batch_size=32,
                                        batches_per_step=1, lr=0.05, base_batch_size=None), False),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        sync_error = ""
        try:  # SyncBatchNorm on CPU ranks would fail at the first forward; setup says why
            ConvNetClassifier().setup(ConvNetClassifier.Config(**CASES["convnet"][1], sync_batchnorm=True),
                                      WorkloadContext(seed=0, data={"path": shards}))
        except ValueError as error:
            sync_error = str(error)
        for name, (workload_cls, config, resident) in CASES.items():
            workload = workload_cls()
            workload.setup(workload_cls.Config(**config),
                           WorkloadContext(seed=0, data={"path": shards, "resident": resident}))
            history = [workload.step() for _ in range(STEPS)]
            train = workload.data.train
            held = len(train._resident_images) if resident else 0
            if rank == 0:
                torch.save({"history": history, "resident_rows": held, "sync_error": sync_error,
                            "params": [p.detach().clone() for p in workload.model.parameters()]},
                           f"{out}/{name}.pt")
    finally:
        dist.destroy_process_group()


def single_process_reference(name, shards):
    workload_cls, config, _ = CASES[name]
    workload = workload_cls()
    workload.setup(workload_cls.Config(**config), WorkloadContext(seed=0, data={"path": shards}))
    halves = [ShardLoader(shards, "train", 16, seed=0, rank=r, world_size=2).batches(0)
              for r in range(2)]
    losses = []
    for _ in range(STEPS):
        (a, la), (b, lb) = next(halves[0]), next(halves[1])
        images, labels = torch.cat([a, b]), torch.cat([la, lb])
        if name == "linear":
            loss_sum, _ = workload.train_batch(workload.inputs(images), labels)
        else:
            workload.trained.train()
            loss_sum, _ = workload.train_batch(images, labels)
        losses.append(float(loss_sum) / len(labels))
    return workload, losses


@pytest.mark.slow
def test_two_gloo_workers_match_one_process(synth_shards, tmp_path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(synth_shards), str(tmp_path)), nprocs=2,
             join=True)
    for name, tolerance in (("linear", 1e-5), ("convnet", 0.01)):
        ddp = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        reference, losses = single_process_reference(name, str(synth_shards))
        ddp_losses = [h["train_loss"] for h in ddp["history"]]
        assert ddp_losses == pytest.approx(losses, rel=tolerance), (name, ddp_losses, losses)
        if name == "convnet":
            assert ddp["sync_error"].startswith("config.sync_batchnorm:")
        if name == "linear":  # resident: each of the 2 ranks holds half of the 320 images
            assert ddp["resident_rows"] == 160
            for a, b in zip(ddp["params"], reference.model.parameters()):
                assert torch.allclose(a, b.detach(), atol=1e-6)
