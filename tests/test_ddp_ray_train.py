"""resources.workers > 1: a trial trains as DDP ranks on Ray Train (gloo on CPU), tracked
like any other trial, and matches one worker on the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import run_cli, tracking_uri
from runyard.data.imagenet import prepare_imagenet
from runyard.data.synth import write_synthetic_imagenet

pytestmark = pytest.mark.slow

SPEC = """\
name: ddp-{workers}
workload: sl.linear
data: {{path: {data}}}
config: {{lr: 0.05, batch_size: 128, init_std: 0.01, optimizer: sgd}}
resources: {{cpus_per_trial: 0.5, workers: {workers}}}
stop: {{iterations: 2}}
checkpoint: {{every: 1}}
tracking: {{experiment: ddp}}
"""


def test_two_ray_train_workers_match_one(workdir: Path):
    tree = write_synthetic_imagenet(workdir / "jpeg", classes=4, train_per_class=32,
                                    val_per_class=8, min_side=20, max_side=28, seed=0)
    shards = workdir / "shards"
    prepare_imagenet(tree, shards, size=16, workers=1, images_per_shard=64)
    losses = {}
    for workers in (1, 2):
        spec = workdir / f"ddp{workers}.yaml"
        spec.write_text(SPEC.format(workers=workers, data=shards))
        result = run_cli("run", str(spec), cwd=workdir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        client = MlflowClient(tracking_uri(workdir))
        (run,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id],
                                    filter_string=f"tags.`runyard.spec_name` = 'ddp-{workers}'")
        assert run.info.status == "FINISHED"
        history = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2]
        losses[workers] = [m.value for m in history]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "templates.png", "spec.yaml"} <= artifacts
    # One global batch of the whole training set, split over ranks, gradients averaged:
    # the same updates as one process, whatever order the ranks read in.
    assert losses[2] == pytest.approx(losses[1], rel=1e-4)
