"""The supervised job specs in jobs/: their config and data blocks pass the workload's checks,
and the laptop job trains on data made the way its comment says."""

from __future__ import annotations

from pathlib import Path

import pytest

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
