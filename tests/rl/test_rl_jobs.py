"""The RL job specs in jobs/ are valid for their workloads: config, env, rollout, stop metrics
and sweep space all check out (the spec parser itself is tested elsewhere; `extends` is
resolved here by the documented deep merge)."""

import copy
from pathlib import Path

import pytest
import yaml

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

JOBS = Path(__file__).resolve().parents[2] / "jobs"
RL_JOBS = [
    "cartpole_pg.yaml", "cartpole_trpo.yaml", "cartpole_cem.yaml", "pong_pg.yaml", "pong_trpo.yaml",
    "hopper_trpo.yaml", "cartpole_ppo_rllib.yaml", "cartpole_pg_sweep.yaml",
]


def deep_merge(base, override):
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load(path):
    spec = yaml.safe_load(path.read_text())
    if "extends" in spec:
        spec = deep_merge(load(path.parent / spec.pop("extends")), spec)
    return spec


def set_dotted(tree, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


@pytest.mark.parametrize("filename", RL_JOBS)
def test_job_spec_is_valid_for_its_workload(filename):
    spec = load(JOBS / filename)
    cls = get(spec["workload"])
    context = WorkloadContext(seed=spec["seed"], env=spec.get("env"), rollout=spec.get("rollout"),
                              resources=spec.get("resources", {}))
    assert cls.check_spec(cls.Config(**spec.get("config", {})), context) == []
    for key in spec.get("stop", {}):
        assert key in ("iterations", "time_s") or key in cls.metrics, key
    sweep = spec.get("sweep")
    if sweep:
        assert sweep["metric"] in cls.metrics
        for dotted, domain in sweep["space"].items():
            assert dotted.startswith("config.")
            (kind, values), = domain.items()
            sample = values[0] if kind == "choice" else values[0]
            trial = copy.deepcopy(spec)
            set_dotted(trial, dotted, sample)
            cls.Config(**trial["config"])  # every dimension names a real config field
