"""A job on `runyard cluster local up --workers N` outlives the cluster: its ledger and
checkpoints live in the cluster's storage (the project's .runyard/ by default), which `down`
keeps, so after a new `up` `runyard resume` finishes it in the same MLflow runs and `runyard
best` reads it back. A driver submitted to a cluster that names no storage refuses to keep its
state in Ray's temporary copy of the project."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import RUNYARD, toy_sweep

from runyard.launch import jobs_api, local_cluster

pytestmark = pytest.mark.slow

EXPERIMENT = "outlives-the-cluster"
ITERATIONS = 20


def runyard(project: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """The CLI in the project folder, as the README's walk-through types it: the cluster
    found in .runyard/cluster, its token there, its MLflow admin from its password file."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RUNYARD_STORAGE", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN_PATH")}
    password = project / local_cluster.DEFAULT_STATE_DIR / local_cluster.TRACKING_PASSWORD_FILE
    if password.exists():
        env.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password.read_text().strip())
    return subprocess.run([str(RUNYARD), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


def cluster_up(project: Path) -> local_cluster.LocalCluster:
    started = runyard(project, "cluster", "local", "up", "--workers", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    return local_cluster.LocalCluster.load(project / local_cluster.DEFAULT_STATE_DIR)


def ended(cluster: local_cluster.LocalCluster, job_id: str) -> tuple[str, str]:
    state = jobs_api.wait(job_id, cluster.jobs_address, timeout_s=420, state_dir=cluster.state_dir)
    return state, "".join(jobs_api.logs(job_id, cluster.jobs_address, state_dir=cluster.state_dir))


def test_a_job_is_resumed_and_read_back_after_down_and_a_new_up(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(toy_sweep("outlives", EXPERIMENT, 1.0, ITERATIONS))
    storage = project / ".runyard"
    state_file = project / local_cluster.DEFAULT_STATE_DIR / local_cluster.STATE_FILE
    job_id = "outlives-1"
    try:
        first = cluster_up(project)
        assert first.storage_dir == str(storage)
        submitted = runyard(project, "submit", "jobs/sweep.yaml", "--id", job_id)
        assert submitted.returncode == 0, submitted.stderr
        # Stopped once both trials have a checkpoint (`keep` deletes older ones: a test for a
        # given checkpoint's name can miss it) and long before their 20 iterations end.
        deadline = time.monotonic() + 300
        while len({path.parent for path in
                   (storage / "ray_results" / job_id).glob("t000*/checkpoint_*")}) < 2:
            assert time.monotonic() < deadline, ended(first, job_id)[1][-3000:]
            time.sleep(1)
        stopped = runyard(project, "stop", job_id)
        assert stopped.returncode == 0, stopped.stderr
        assert ended(first, job_id)[0] == "STOPPED"
        assert runyard(project, "cluster", "local", "down").returncode == 0
        assert (storage / "sweeps" / f"{job_id}.json").is_file()  # not in Ray's copy, gone with it

        second = cluster_up(project)
        assert second.tracking_uri == first.tracking_uri  # the URI the job's ledger names
        resumed = runyard(project, "resume", job_id, "--address", second.jobs_address)
        assert resumed.returncode == 0, resumed.stderr
        resume_id = next(word.rstrip(":") for word in resumed.stdout.split()
                         if word.startswith(f"{job_id}-resume-"))
        state, log = ended(second, resume_id)
        assert state == "SUCCEEDED", log[-4000:]

        best = runyard(project, "best", job_id)
        assert best.returncode == 0, best.stdout + best.stderr
        assert job_id in best.stdout
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", second.tracking_username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", Path(second.tracking_password_path).read_text().strip())
        client = MlflowClient(second.tracking_uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`runyard.sweep_id` = '{job_id}'")
        trials = [r for r in runs if r.data.tags["runyard.kind"] == "trial"]
        assert len(runs) == 3 and len(trials) == 2  # the runs of the first cluster, no new ones
        assert {r.info.status for r in runs} == {"FINISHED"}
        for trial in trials:
            steps = sorted(m.step for m in client.get_metric_history(trial.info.run_id, "score"))
            assert steps == list(range(1, ITERATIONS + 1)), (trial.info.run_name, steps)
    finally:
        if state_file.exists():
            local_cluster.down(state_file.parent, echo=lambda _: None)


def test_a_submitted_driver_without_storage_refuses_to_keep_state_in_ray_s_copy(tmp_path):
    """As on a cluster whose nodes set no RUNYARD_STORAGE: the driver says where its state
    would go, and starts nothing."""
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(toy_sweep("nowhere", EXPERIMENT, 0.1, 2))
    env = {k: v for k, v in os.environ.items() if k not in ("RUNYARD_STORAGE", "MLFLOW_TRACKING_URI")}
    env["RUNYARD_SUBMISSION_ID"] = "nowhere-1"
    driver = subprocess.run([str(RUNYARD), "run", "jobs/sweep.yaml", "--id", "nowhere-1"], cwd=project,
                            env=env, capture_output=True, text=True, timeout=120)
    assert driver.returncode == 2, driver.stdout + driver.stderr
    assert "Ray's temporary copy of the project" in driver.stderr
    assert "--storage" in driver.stderr and "RUNYARD_STORAGE" in driver.stderr
    assert not (project / ".runyard" / "sweeps").exists()
