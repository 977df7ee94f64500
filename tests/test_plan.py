"""Feasibility of trial requests against a cluster's nodes (node resources as Ray reports them)."""

from __future__ import annotations

import re

import pytest

from runyard_testing import JOBS
from runyard.errors import UserError
from runyard.plan import check_feasible, cluster_config_nodes, expand, trial_bundles
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


def test_rollout_workers_are_bundles_carved_from_the_trials_cpus(tmp_path):
    spec = load_spec(JOBS / "cartpole_pg.yaml", ["rollout.workers=3", "rollout.cpus_per_worker=2",
                                                 "rollout.backend=ray", "resources.cpus_per_trial=7"])
    assert trial_bundles(spec) == [{"CPU": 1.0}] + [{"CPU": 2.0}] * 3
    # Each bundle fits a node, but the four together need 7 CPUs: a 4-CPU cluster refuses.
    with pytest.raises(UserError, match="whole cluster together"):
        check_feasible(spec, expand(spec), [{"CPU": 4.0}])


def test_cluster_yaml_node_types_are_what_an_autoscaling_cluster_can_hold():
    nodes = cluster_config_nodes(JOBS.parent / "cluster.yaml")
    # The head once (no CPUs for trials), each worker type max_workers times.
    assert sum(1 for n in nodes if n.get("GPU") == 8) == 2
    assert sum(1 for n in nodes if n.get("gpu_node")) == 8
    assert sum(n["CPU"] for n in nodes) == 0 + 2 * 96 + 8 * 8 + 12 * 64
    check_feasible(*plan("resources.gpus_per_trial=8", "resources.custom={multi_gpu_node: 1}"),
                   nodes)
    with pytest.raises(UserError, match=r"short of: GPU"):
        check_feasible(*plan("resources.gpus_per_trial=16"), nodes)


@pytest.mark.parametrize("text, field", [
    ("head_node_type: head\n", "available_node_types: missing"),
    ("available_node_types:\n  head: {resources: {head_node: 1}}\n",
     "available_node_types.head.resources"),
    ("available_node_types: [\n", "not valid YAML"),
])
def test_a_cluster_config_without_node_resources_names_the_field(tmp_path, text, field):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(field)) as error:
        cluster_config_nodes(path)
    assert str(path) in str(error.value)
