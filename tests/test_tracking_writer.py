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


def test_a_checkpoint_is_recorded_only_once_the_reports_it_does_not_carry_are_written(tmp_path: Path):
    """A checkpoint carries the reports since the one before (execute/trainable.py). Tune
    records it as the trial's restore point when `on_checkpoint` returns, so by then the
    reports up to the checkpoint before must be in MLflow: a driver SIGKILLed right after
    would otherwise lose them (the writer had them in a batch not yet sent)."""
    from ray.tune.experiment import Trial

    from runyard.execute.tracking_callback import TrackingCallback
    from runyard.execute.tune_runner import trial_payload
    from runyard.plan import expand
    from runyard.spec import load_spec
    from runyard.tracking.writer import TrackingWriter

    spec_file = tmp_path / "toy.yaml"
    spec_file.write_text("name: toy\nworkload: toy.quadratic\nstop: {iterations: 4}\n")
    spec = load_spec(spec_file)
    payload = trial_payload(spec, expand(spec)[0], tmp_path, str(tmp_path / "tune"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = JobTracking(uri, "checkpoint-flush")
    tracking.writer.close()
    client = tracking.client
    tracking.writer = TrackingWriter(lambda: client, flush_s=3600)  # no timed batch meanwhile
    callback = TrackingCallback(tracking, None, {}, {}, lambda _: {}, lambda: "", {"score"}, {})
    trial = Trial("WorkloadTrainable", config=payload.as_config(), stub=True)
    callback.on_trial_start(0, [trial], trial)

    def report_then_checkpoint(*steps: int) -> None:
        for step in steps:
            callback.on_trial_result(0, [trial], trial, {"score": float(step), "training_iteration": step,
                                                         "time_total_s": 0.1 * step})
        callback.on_checkpoint(0, [trial], trial, checkpoint=None)

    report_then_checkpoint(1, 2)
    report_then_checkpoint(3, 4)  # its checkpoint carries steps 3 and 4 only
    run_id = callback.run_of(trial).id
    written = sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "score"))
    assert written[:2] == [1, 2]
    tracking.close()
