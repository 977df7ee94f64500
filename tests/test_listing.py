"""`runyard ls` on the embedded store reads SQLite directly when no run is RUNNING: the rows
must be the ones MLflow's client gives, on a store MLflow made."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from runyard.tracking import listing, sqlite_view
from runyard.tracking.tags import JOB_ID, KIND, PARENT, TRIAL_COUNTS


def make_store(folder: Path) -> str:
    """Runs shaped as runyard makes them, and the ones `ls` must leave out."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    first = client.create_experiment("first", artifact_location=(folder / "a").as_uri())
    second = client.create_experiment("second", artifact_location=(folder / "b").as_uri())
    gone = client.create_experiment("gone", artifact_location=(folder / "c").as_uri())

    def run(experiment: str, name: str, tags: dict[str, str], status: str = "FINISHED") -> str:
        made = client.create_run(experiment, run_name=name, tags=tags).info.run_id
        time.sleep(0.01)  # distinct start times, so that the order is the order made
        if status != "RUNNING":
            client.set_terminated(made, status)
        return made

    run(first, "plain", {KIND: "run", JOB_ID: "plain-1"})
    sweep = run(first, "sweep", {KIND: "sweep", JOB_ID: "sweep-1", TRIAL_COUNTS: "2/3"})
    client.log_metric(sweep, "best_score", 0.123456, step=3)
    for child in range(3):
        run(first, f"x={child}", {KIND: "trial", JOB_ID: "sweep-1", PARENT: sweep},
            "FAILED" if child == 2 else "FINISHED")
    run(second, "killed", {KIND: "run", JOB_ID: "killed-1"}, "KILLED")
    run(second, "by hand", {})  # no runyard kind: not a job
    client.delete_run(run(second, "deleted", {KIND: "run", JOB_ID: "deleted-1"}))
    run(gone, "in a deleted experiment", {KIND: "run", JOB_ID: "gone-1"})
    client.delete_experiment(gone)
    nan = run(second, "nan", {KIND: "sweep", JOB_ID: "nan-1", TRIAL_COUNTS: "0/1"}, "FAILED")
    client.log_metric(nan, "best_score", float("nan"))
    return uri


def test_ls_reads_an_ended_store_as_mlflow_lists_it(tmp_path: Path):
    uri = make_store(tmp_path)
    database = tmp_path / "mlflow.db"
    for experiment, limit in ((None, 50), ("first", 50), ("second", 50), (None, 2), ("none", 5)):
        stored = sqlite_view.ended_top_runs(database, experiment, limit)
        assert stored is not None, (experiment, limit)
        rows = listing.recent_jobs(uri, experiment, limit)
        assert rows == listing._recent_jobs_from_mlflow(uri, experiment, limit), (experiment, limit)
    everything = listing.recent_jobs(uri, None, 50)
    assert [row.job_id for row in everything] == ["nan-1", "killed-1", "sweep-1", "plain-1"]
    assert everything[2].trials == "2/3" and everything[2].best == "score=0.1235"
    assert everything[0].best == "score=nan"

    # Read without importing MLflow (its import alone is ~1.2 s).
    probe = ("import sys\nfrom runyard.tracking.listing import recent_jobs\n"
             f"print(len(recent_jobs({uri!r}, None, 50)), 'mlflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "4 False"


def test_a_running_run_or_an_unknown_schema_goes_through_mlflow(tmp_path: Path):
    uri = make_store(tmp_path)
    database = tmp_path / "mlflow.db"
    client = MlflowClient(uri)
    # A run still RUNNING may have lost its driver: only the client path marks it (reconcile).
    experiment = client.get_experiment_by_name("first").experiment_id
    running = client.create_run(experiment, run_name="live",
                                tags={KIND: "run", JOB_ID: "live-1"}).info.run_id
    assert sqlite_view.ended_top_runs(database, None, 50) is None
    assert "live-1" in [row.job_id for row in listing.recent_jobs(uri, None, 50)]
    client.set_terminated(running, "FINISHED")
    assert sqlite_view.ended_top_runs(database, None, 50) is not None

    # A store at a schema revision this reading was not checked against is left to MLflow.
    other = tmp_path / "other" / "mlflow.db"
    other.parent.mkdir()
    shutil.copy(database, other)
    with sqlite3.connect(other) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'aaaaaaaaaaaa'")
    assert sqlite_view.ended_top_runs(other, None, 50) is None
    assert sqlite_view.ended_top_runs(tmp_path / "missing.db", None, 50) is None
