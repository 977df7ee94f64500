"""The tracking writer against a real MLflow store: every value arrives, in batches."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from runyard.tracking.store import JobTracking


def test_batched_metrics_all_arrive_and_runs_end(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = JobTracking(uri, "writer-test")
    calls = {"log_batch": 0}
    original = tracking.client.log_batch

    def counting_log_batch(*args, **kwargs):
        calls["log_batch"] += 1
        return original(*args, **kwargs)

    tracking.client.log_batch = counting_log_batch
    parent = tracking.start_run("parent", {"runyard.kind": "sweep"}, {"a": 1})
    child = tracking.start_run("child", {"runyard.kind": "trial"}, {"lr": 0.1}, parent=parent)
    for step in range(300):
        tracking.writer.log_metrics(child, {f"m{i}": step * i for i in range(20)}, step)
    tracking.writer.end_run(child, "FINISHED")
    tracking.writer.end_run(parent, "FINISHED")
    tracking.close()

    client = MlflowClient(uri)
    history = client.get_metric_history(child.id, "m7")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [s * 7.0 for s in range(300)]
    assert client.get_run(child.id).data.tags["mlflow.parentRunId"] == parent.id
    assert client.get_run(child.id).info.status == "FINISHED"
    assert client.get_run(parent.id).data.params == {"a": "1"}
    # 6,000 values went out in a handful of requests, not 6,000.
    assert calls["log_batch"] < 30
