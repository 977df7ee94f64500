"""Feasibility of trial requests against a cluster's nodes (node resources as Ray reports them)."""

from __future__ import annotations

import pytest

from runyard_testing import JOBS
from runyard.errors import UserError
from runyard.plan import check_feasible, expand, trial_bundles
from runyard.spec import load_spec

GIB = 1024**3
LAPTOP = [{"CPU": 8.0, "memory": 16 * GIB, "node:__internal_head__": 1.0}]
CLUSTER = LAPTOP + [{"CPU": 32.0, "GPU": 8.0, "memory": 200 * GIB, "gpu_node": 1.0}]


def plan(*overrides: str):
    spec = load_spec(JOBS / "digits_linear_sweep.yaml", list(overrides))
    return spec, expand(spec)


def test_a_request_that_fits_some_node_passes():
    check_feasible(*plan("resources.gpus_per_trial=4", "resources.cpus_per_trial=8"), CLUSTER)


@pytest.mark.parametrize("overrides, missing", [
    (["resources.cpus_per_trial=64"], "CPU"),
    (["resources.gpus_per_trial=1"], "GPU"),
    (["resources.memory_gb=64"], "memory"),
    (["resources.custom={tpu: 1}"], "tpu"),
])
def test_a_request_no_node_holds_is_refused_with_the_largest_node(overrides, missing):
    spec, trials = plan(*overrides)
    with pytest.raises(UserError) as error:
        check_feasible(spec, trials, LAPTOP)
    text = str(error.value)
    assert "t0000 (and the other 15 trials)" in text
    assert "largest of the cluster's 1 node(s) has {CPU=8, memory=16.0GiB}" in text
    assert f"short of: {missing}" in text


def test_rollout_workers_are_bundles_of_their_own(tmp_path):
    spec = load_spec(JOBS / "digits_linear.yaml", ["rollout.workers=3", "rollout.cpus_per_worker=2"])
    assert trial_bundles(spec) == [{"CPU": 1.0}] + [{"CPU": 2.0}] * 3
    # Each bundle fits a node, but the four together need 7 CPUs: a 4-CPU cluster refuses.
    with pytest.raises(UserError, match="whole cluster together"):
        check_feasible(spec, expand(spec), [{"CPU": 4.0}])
