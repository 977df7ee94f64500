"""Same seed, same numbers; a restored checkpoint continues exactly where it left off."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import JOBS, run_cli, tracking_uri
from runyard import workloads
from runyard.spec import load_spec, workload_context


def make_linear(seed: int = 0):
    spec = load_spec(JOBS / "digits_linear.yaml")
    cls = workloads.get(spec.workload)
    workload = cls()
    workload.setup(cls.Config.model_validate(spec.config), workload_context(spec, seed=seed))
    return workload


def learning(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that depend on the numbers, not on the clock."""
    return {k: v for k, v in metrics.items() if not k.endswith(("_per_s", "_time_s"))}


def test_restored_checkpoint_continues_identically(tmp_path: Path):
    uninterrupted = make_linear()
    expected = [learning(uninterrupted.step()) for _ in range(5)]

    first = make_linear()
    for _ in range(2):
        first.step()
    first.save(tmp_path)
    resumed = make_linear()  # a fresh process would build it the same way
    resumed.restore(tmp_path)
    assert [learning(resumed.step()) for _ in range(3)] == expected[2:]


def test_different_seeds_differ():
    assert learning(make_linear(seed=0).step()) != learning(make_linear(seed=1).step())


@pytest.mark.slow
def test_same_seed_through_tune_gives_identical_metrics(workdir: Path):
    # Two trials with the same config and seed in one sweep: the second reuses the first's
    # actor (reuse_actors), so this also checks that a reset leaves nothing behind.
    (workdir / "twice.yaml").write_text(
        f"extends: {JOBS / 'digits_linear.yaml'}\nname: twice\nstop: {{iterations: 4}}\n"
        "sweep:\n  search: grid\n  metric: val_loss\n  max_concurrent: 1\n"
        "  space:\n    config.lr: {grid: [0.05, 0.05]}\n")
    result = run_cli("run", "twice.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking_uri(workdir))
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    children = [r for r in runs if r.data.tags.get("runyard.kind") == "trial"]
    assert len(children) == 2
    histories = [
        [(m.step, m.value) for m in sorted(client.get_metric_history(c.info.run_id, name),
                                           key=lambda m: m.step)]
        for c in children for name in ("train_loss", "val_loss")
    ]
    assert histories[0] == histories[2] and histories[1] == histories[3]
    assert len(histories[0]) == 4
