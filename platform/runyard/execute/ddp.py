"""A trial of `resources.workers` > 1: the workload trains on Ray Train (TorchTrainer, DDP).

The Tune trial is a small function that runs a TorchTrainer; each of its workers runs the
same loop as WorkloadTrainable (setup, step, stop conditions, checkpoints) on one DDP rank —
gloo on CPUs, NCCL on GPUs. The workload notices torch.distributed is initialised and shards
its data and averages its gradients (runyard.workloads.sl.training); rank 0's metrics (which
the workload has already reduced over ranks) and checkpoints go back to Tune and MLflow, and
rank 0's final artifacts include RANKS_FILE: the host and Ray node each rank ran on.
With workers > 1, `cpus_per_trial` and `gpus_per_trial` are what each worker holds.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch.distributed as dist
from ray.train.torch import TorchTrainer, get_device
from ray.tune.integration.ray_train import TuneReportCallback

from runyard.execute.payload import TrialPayload
from runyard.execute.trainable import ARTIFACTS_DIR, STATE_DIR, build_workload, metric_directions
from runyard.plan.resources import process_bundle

PROGRESS_FILE = "progress.json"
RANKS_FILE = "ranks.json"


def run_ddp_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable: one Ray Train run per trial."""
    trial = TrialPayload.of(config)
    resources = trial.resources
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=trial.as_config(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.gpus_per_trial > 0,
            resources_per_worker=process_bundle(resources),
        ),
        # Same name and storage on a retry: Ray Train resumes from its latest checkpoint.
        run_config=ray.train.RunConfig(
            name=f"{trial.trial_id}-ddp",
            storage_path=trial.storage,
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=trial.checkpoint_keep),
        ),
    )
    trainer.fit()


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One DDP rank: the WorkloadTrainable loop, reporting through Ray Train."""
    trial = TrialPayload.of(loop_config)
    rank = ray.train.get_context().get_world_rank()
    workload = build_workload(trial, {"device": get_device()})
    ranks = _where_ranks_run()
    directions = metric_directions(trial)
    iteration, elapsed = 0, 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            workload.restore(Path(directory) / STATE_DIR)
            progress = json.loads((Path(directory) / PROGRESS_FILE).read_text())
            iteration, elapsed = progress["iteration"], progress["elapsed_s"]
    every = trial.checkpoint_every
    while True:
        started = time.time()
        metrics = {name: float(value) for name, value in workload.step().items()}
        iteration += 1
        elapsed += time.time() - started
        done = trial.stop.reached(directions, iteration, elapsed, metrics)
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0 and (done or (every and iteration % every == 0)):
                (Path(directory) / STATE_DIR).mkdir()
                workload.save(Path(directory) / STATE_DIR)
                (Path(directory) / PROGRESS_FILE).write_text(
                    json.dumps({"iteration": iteration, "elapsed_s": elapsed}))
                if done:  # the end-of-trial artifacts go straight into the last checkpoint
                    artifacts = Path(directory) / ARTIFACTS_DIR
                    artifacts.mkdir()
                    workload.artifacts(artifacts)
                    (artifacts / RANKS_FILE).write_text(json.dumps(ranks, indent=2))
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report({**metrics, "done": done}, checkpoint=saved)
        if done:
            break
    workload.close()


def _where_ranks_run() -> list[dict[str, str]]:
    """Every rank's host and Ray node, in rank order: which machines a slow or failed run
    used. Collective: every rank calls it, at the same point of the loop."""
    here = {"host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id()}
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, here)
    return everyone
