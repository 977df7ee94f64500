"""The supervised job specs in jobs/: their config and data blocks pass the workload's checks,
and the laptop job trains on data made the way its comment says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

JOBS = Path(__file__).resolve().parents[2] / "jobs"
SL_JOBS = ["imagenet64_linear.yaml", "imagenet64_linear_sweep.yaml", "imagenet64_wrn.yaml",
           "imagenet_resnet50.yaml", "synth_convnet.yaml"]


def load(name):
    """The spec with `extends:` merged (keys of the file over its base, recursively)."""
    spec = yaml.safe_load((JOBS / name).read_text())
    base_name = spec.pop("extends", None)
    if base_name is None:
        return spec

    def merge(base, over):
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict)
                           else v for k, v in over.items()}}
    return merge(load(base_name), spec)


@pytest.mark.parametrize("name", SL_JOBS)
def test_job_spec_passes_the_workload_checks(name):
    spec = load(name)
    workload_cls = get(spec["workload"])
    config = workload_cls.Config(**spec["config"])
    context = WorkloadContext(seed=spec["seed"], data=spec["data"], resources=spec["resources"])
    assert workload_cls.check_spec(config, context) == []
    for key in spec.get("sweep", {}).get("space", {}):
        assert key.split(".", 1)[1] in workload_cls.Config.model_fields
    assert spec.get("sweep", {}).get("metric", "val_top1") in workload_cls.metrics
    assert set(spec["stop"]) - {"iterations", "time_s"} <= set(workload_cls.metrics)


def test_laptop_job_trains(synth_shards):
    spec = load("synth_convnet.yaml")
    workload_cls = get(spec["workload"])
    workload = workload_cls()
    workload.setup(workload_cls.Config(**spec["config"]),
                   WorkloadContext(seed=0, data={**spec["data"], "path": str(synth_shards)}))
    history = [workload.step() for _ in range(3)]  # 5 updates per epoch on 320 images
    assert history[-1]["val_top1"] > 0.8, history
