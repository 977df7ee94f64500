"""`runyard run` end to end: the console script, an embedded Ray, Tune, and MLflow read back."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import JOBS, run_cli, tracking_uri

pytestmark = pytest.mark.slow


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    paths = set()
    for item in client.list_artifacts(run_id, path):
        paths.add(item.path)
        if item.is_dir:
            paths |= artifact_paths(client, run_id, item.path)
    return paths


def test_plain_job_is_one_finished_run_with_everything_recorded(workdir: Path):
    result = run_cli("run", str(JOBS / "digits_linear.yaml"), "--set", "stop.iterations=6",
                     cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "FINISHED" in result.stdout and "runyard ui" in result.stdout

    client = MlflowClient(tracking_uri(workdir))
    experiment = client.get_experiment_by_name("digits")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["config.lr"] == "0.05"
    assert run.data.params["config.optimizer"] == "sgd"
    assert run.data.params["seed"] == "0"
    for metric in ("train_loss", "val_loss", "train_top1", "val_top1", "val_top5"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6], metric
    tags = run.data.tags
    assert tags["runyard.spec_name"] == "digits-linear"
    assert len(tags["runyard.spec_hash"]) == 12
    assert tags["runyard.trial_id"] == "t0000" and tags["runyard.seed"] == "0"
    assert tags["runyard.version"] and tags["runyard.git_commit"]
    artifacts = artifact_paths(client, run.info.run_id)
    assert {"spec.yaml", "pip-freeze.txt", "templates.png", "checkpoint/linear.pt"} <= artifacts
    spec_text = (Path(client.download_artifacts(run.info.run_id, "spec.yaml", str(workdir)))
                 .read_text())
    assert "iterations: 6" in spec_text  # the resolved spec, --set included
    freeze = Path(client.download_artifacts(run.info.run_id, "pip-freeze.txt", str(workdir)))
    assert "mlflow==" in freeze.read_text()

    listing = run_cli("ls", cwd=workdir)
    assert listing.returncode == 0 and run.info.run_id in listing.stdout


def test_sweep_is_a_parent_with_one_child_per_trial(workdir: Path):
    result = run_cli("run", str(JOBS / "digits_linear_sweep.yaml"), "--set", "stop.iterations=3",
                     cwd=workdir)
    assert result.returncode == 0, result.stderr + result.stdout

    client = MlflowClient(tracking_uri(workdir))
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("runyard.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 16
    assert parent.info.status == "FINISHED"
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({c.data.tags["runyard.trial_id"] for c in children}) == 16

    # Each child's params are its sampled config; its name says what distinguishes it.
    from runyard.plan import expand
    from runyard.spec import load_spec

    spec = load_spec(JOBS / "digits_linear_sweep.yaml", ["stop.iterations=3"])
    by_id = {t.trial_id: t for t in expand(spec)}
    for child in children:
        trial = by_id[child.data.tags["runyard.trial_id"]]
        for key in ("lr", "weight_decay", "init_std"):
            assert float(child.data.params[f"config.{key}"]) == pytest.approx(trial.config[key])
        assert child.info.run_name == trial.label

    # The parent records the best trial, and it is the best of the children.
    finals = {c.data.tags["runyard.trial_id"]: c.data.metrics["val_top1"] for c in children}
    best_id = parent.data.tags["runyard.best_trial_id"]
    assert finals[best_id] == max(finals.values())
    assert parent.data.metrics["best_val_top1"] == pytest.approx(max(finals.values()))


def test_gpu_request_on_a_cpu_only_cluster_fails_fast_with_an_explanation(workdir: Path):
    started = time.monotonic()
    result = run_cli("run", str(JOBS / "digits_linear_sweep.yaml"),
                     "--set", "resources.gpus_per_trial=1", cwd=workdir)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    message = result.stderr
    assert "t0000 (and the other 15 trials)" in message and "GPU=1" in message
    assert "largest" in message and "CPU=" in message and "short of: GPU" in message
    assert elapsed < 120  # seconds, not PENDING forever (a generous bound on a shared machine)
    # No MLflow run was created for it.
    db = workdir / ".runyard" / "mlflow.db"
    if db.exists():
        client = MlflowClient(tracking_uri(workdir))
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_failing_trial_ends_failed_with_its_traceback(workdir: Path):
    # lr far too large overflows to NaN: the workload refuses to go on (a real failure).
    (workdir / "diverge.yaml").write_text(
        f"extends: {JOBS / 'digits_linear.yaml'}\nname: diverge\nconfig: {{lr: 1.0e+30}}\n"
        "stop: {iterations: 3}\n")
    result = run_cli("run", "diverge.yaml", cwd=workdir)
    assert result.returncode == 1, result.stderr
    client = MlflowClient(tracking_uri(workdir))
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FAILED"
    assert "not finite" in run.data.tags["runyard.error"]
    assert "error.txt" in artifact_paths(client, run.info.run_id)


def test_a_store_that_cannot_be_opened_stops_the_job_and_keeps_nothing_of_it(workdir: Path):
    """The driver opens the tracking store while Tune starts the first trial (off the short
    run's path): a store it cannot open still ends the run with exit 2, a message that names
    the store, and no ledger, Tune state or process of the job left."""
    (workdir / ".runyard").mkdir(exist_ok=True)
    store = workdir / ".runyard" / "mlflow.db"
    store.write_bytes(b"not a database " * 300)
    script = workdir / "slow.py"
    script.write_text("import json, time\ntime.sleep(20)\nprint(json.dumps({'done': 1}))\n")
    (workdir / "slow.yaml").write_text(
        "name: slow\nworkload: command\nconfig:\n  command: python slow.py\n"
        "  metrics: {done: max}\nstop: {iterations: 1}\n")
    started = time.monotonic()
    result = run_cli("run", "slow.yaml", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert f"the tracking store sqlite:///{store} could not be opened" in result.stderr
    assert "file is not a database" in result.stderr
    assert time.monotonic() - started < 90  # it did not wait for the 20 s trial to end
    assert store.read_bytes() == b"not a database " * 300
    kept = [p for p in (workdir / ".runyard").rglob("*") if p.is_file() and p != store]
    assert kept == []
    programs = [p for p in psutil.process_iter(["cmdline"]) if "slow.py" in (p.info["cmdline"] or [])]
    assert programs == []
