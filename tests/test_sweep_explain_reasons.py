"""explain's reasons for a pending trial, from a cluster's state as Ray reports it: each
reason where it applies, in order of precedence (infeasible, concurrency, autoscaler, busy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.execute.explain import ClusterView, pending_reason, request_of
from runyard.spec import load_spec

SPEC = """\
name: reasons
workload: toy.quadratic
stop: {iterations: 2}
resources: {cpus_per_trial: 2, custom: {accelerator: 1}}
sweep:
  samples: 8
  metric: score
  max_concurrent: 3
  space:
    config.x: {uniform: [0.0, 1.0]}
"""

NODE = {"CPU": 4.0, "accelerator": 2.0, "memory": 8 * 2.0**30}


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "reasons.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def view(available: dict, nodes: list | None = None, groups: int = 0, autoscaler: list | None = None):
    nodes = nodes if nodes is not None else [NODE]
    total = {k: sum(n.get(k, 0.0) for n in nodes) for k in {k for n in nodes for k in n}}
    return ClusterView("127.0.0.1:6379", total, {k: available.get(k, v) for k, v in total.items()},
                       nodes, groups, autoscaler or [])


def reason(spec, running: int, cluster: ClusterView | None) -> str:
    request, bundles = request_of(spec)
    assert request == {"CPU": 2.0, "accelerator": 1.0}
    return pending_reason(spec, bundles, request, running, cluster)


def test_no_node_can_ever_hold_it(spec):
    small = {"CPU": 1.0, "accelerator": 4.0}
    text = reason(spec, 0, view({}, nodes=[small, small]))
    assert text.startswith("no node can ever hold it") and "CPU=2" in text and "CPU=1" in text


def test_max_concurrent_reached(spec):
    assert reason(spec, 3, view({"CPU": 0.0})) == "max_concurrent=3 trials are running"


def test_autoscaler_starting_nodes(spec):
    text = reason(spec, 1, view({"CPU": 0.0}, autoscaler=["2 x cpu-node (launching)"]))
    assert text == "autoscaler starting nodes: 2 x cpu-node (launching)"


def test_resources_busy_by_running_trials(spec):
    text = reason(spec, 2, view({"CPU": 0.0, "accelerator": 0.0}, groups=4))
    assert text == ("resources busy by 2 running trial(s): CPU 0 of 4 free, accelerator 0 of "
                    "2 free; 4 placement group(s) waiting")


def test_free_resources_mean_it_is_about_to_start(spec):
    assert reason(spec, 1, view({"CPU": 2.0, "accelerator": 1.0})).startswith("resources are free")
    assert reason(spec, 1, view({"CPU": 2.0, "accelerator": 1.0}, groups=1)).startswith(
        "placement group waiting")


def test_without_the_cluster_it_says_so(spec):
    assert "cluster not inspected" in reason(spec, 2, None)
