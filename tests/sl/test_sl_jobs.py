"""The supervised job specs in jobs/: their config and data blocks pass the workload's checks,
and the laptop job trains on data made the way its comment says."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from runyard_testing import run_cli, tracking_uri

from runyard.spec import load_spec
from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

JOBS = Path(__file__).resolve().parents[2] / "jobs"
SL_JOBS = ["imagenet64_linear.yaml", "imagenet64_linear_sweep.yaml", "imagenet64_wrn.yaml",
           "imagenet_resnet50.yaml", "synth_convnet.yaml"]


@pytest.mark.parametrize("name", SL_JOBS)
def test_job_spec_passes_the_workload_checks(name):
    # The spec parser checks config, data block, stop metrics and every sweep dimension
    # against the workload; data paths are checked only when a job runs (check_inputs).
    spec = load_spec(JOBS / name)
    assert spec.workload in ("sl.linear", "sl.convnet") and spec.data.path


def test_laptop_job_trains(synth_shards):
    spec = load_spec(JOBS / "synth_convnet.yaml")
    workload_cls = get(spec.workload)
    workload = workload_cls()
    workload.setup(workload_cls.Config(**spec.config),
                   WorkloadContext(seed=0, data={**spec.data.model_dump(), "path": str(synth_shards)}))
    history = [workload.step() for _ in range(3)]  # 5 updates per epoch on 320 images
    assert history[-1]["val_top1"] > 0.8, history


@pytest.mark.slow
def test_a_job_whose_data_is_gone_is_refused_on_resume_naming_the_field(synth_shards, tmp_path):
    data = tmp_path / "shards"
    shutil.copytree(synth_shards, data)
    (tmp_path / "job.yaml").write_text(
        f"name: gone\nworkload: sl.linear\ndata: {{path: '{data}'}}\nconfig: {{batch_size: 64}}\n"
        "stop: {iterations: 1}\ncheckpoint: {every: 1}\n")
    ran = run_cli("run", "job.yaml", "--id", "gone", "--num-cpus", "1", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    client = MlflowClient(tracking_uri(tmp_path))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs_before = client.search_runs(experiments)

    shutil.rmtree(data)
    for command in ("resume", "rerun-failed"):
        refused = run_cli(command, "gone", "--num-cpus", "1", cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "gone (spec " in refused.stderr and "data.path:" in refused.stderr, refused.stderr
    assert len(client.search_runs(experiments)) == len(runs_before) > 0
