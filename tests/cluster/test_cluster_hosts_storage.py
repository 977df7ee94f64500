"""A job's state on hosts that share nothing but a bridge and a storage folder: refused when its
storage is not shared, kept in the storage when it is, and continued from the laptop, which
sees the cluster only through the Jobs API and MLflow."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from node_faults import add_worker, kill_host
from runyard_testing import RUNYARD, finished, job_runs, laptop, toy_sweep

pytestmark = pytest.mark.slow

EXPERIMENT = "hosts-stored"


def test_a_storage_the_worker_hosts_do_not_share_is_refused_before_any_trial(
        namespaced_hosts, tmp_path, monkeypatch):
    # /tmp is each host's own: every worker can write a folder of that name, and sees nothing
    # the driver wrote there.
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(toy_sweep("stored", EXPERIMENT, 0.1, 2))
    job_id = f"unshared-{namespaced_hosts.cluster.cluster_id[:6]}"
    submitted = laptop(namespaced_hosts, project, "submit", "jobs/sweep.yaml", "--id", job_id,
                       "--storage", "/tmp/runyard-head-only")
    assert submitted.returncode == 0, submitted.stderr
    state, log = finished(namespaced_hosts, job_id)
    assert state == "FAILED", log[-3000:]
    assert "storage /tmp/runyard-head-only is not shared by every node" in log, log[-3000:]
    for worker in namespaced_hosts.cluster.nodes[1:]:
        assert f"node {worker.address}: does not see" in log
    assert job_runs(namespaced_hosts, monkeypatch, EXPERIMENT, job_id) == []  # refused before any run


def test_a_sweep_on_worker_hosts_keeps_its_state_in_storage_and_resumes_from_the_laptop(
        namespaced_hosts, tmp_path, monkeypatch):
    hosts = namespaced_hosts
    storage = hosts.storage / "jobs"
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(toy_sweep("stored", EXPERIMENT, 1.0, 12))
    job_id = f"stored-{hosts.cluster.cluster_id[:6]}"
    submitted = laptop(hosts, project, "submit", "jobs/sweep.yaml", "--id", job_id,
                       "--storage", str(storage))
    assert submitted.returncode == 0, submitted.stderr

    # Both trials run on worker hosts (the head has no CPU) and checkpoint into the storage.
    tune_dir = storage / "ray_results" / job_id
    deadline = time.monotonic() + 300
    while len(list(tune_dir.glob("t000*/checkpoint_000002"))) < 2:
        assert time.monotonic() < deadline, finished(hosts, job_id, 1)[1][-3000:]
        time.sleep(1)
    assert (storage / "sweeps" / f"{job_id}.json").is_file()
    stop = subprocess.run([str(RUNYARD), "stop", job_id, "--address", hosts.cluster.jobs_address],
                          env={**os.environ, "RAY_AUTH_TOKEN_PATH": hosts.cluster.token_path},
                          capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert finished(hosts, job_id)[0] == "STOPPED"
    runs = job_runs(hosts, monkeypatch, EXPERIMENT, job_id)
    assert {r.info.status for r in runs if r.data.tags["runyard.kind"] == "trial"} == {"KILLED"}

    # From the laptop, which never sees the storage: a new driver goes on where it stopped.
    resumed = laptop(hosts, project, "resume", job_id, "--storage", str(storage))
    assert resumed.returncode == 0, resumed.stderr
    resume_id = next(word.rstrip(":") for word in resumed.stdout.split()
                     if word.startswith(f"{job_id}-resume-"))
    state, log = finished(hosts, resume_id)
    assert state == "SUCCEEDED", log[-4000:]

    runs = job_runs(hosts, monkeypatch, EXPERIMENT, job_id)
    trials = [r for r in runs if r.data.tags["runyard.kind"] == "trial"]
    assert len(runs) == 3 and len(trials) == 2  # the same parent and trial runs, no new ones
    assert {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(hosts.cluster.tracking_uri)
    for trial in trials:
        steps = sorted(m.step for m in client.get_metric_history(trial.info.run_id, "score"))
        assert steps == list(range(1, 13)), (trial.info.run_name, steps)  # once per step


def test_a_lost_worker_host_s_trial_goes_on_from_its_stored_checkpoint_on_another(
        namespaced_hosts, tmp_path, monkeypatch):
    """Every process of one worker host dies at once (a machine lost): its trial is retried
    on the other worker host from its last checkpoint in the storage, in the same run."""
    from runyard.execute.payload import TrialPayload
    from runyard.ray_compat import experiment_trials

    hosts = namespaced_hosts
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(
        toy_sweep("stored", EXPERIMENT, 1.0, 10) + "  max_failures: 2\n")
    job_id = f"lost-{hosts.cluster.cluster_id[:6]}"
    submitted = laptop(hosts, project, "submit", "jobs/sweep.yaml", "--id", job_id)
    assert submitted.returncode == 0, submitted.stderr
    tune_dir = hosts.storage / "ray_results" / job_id  # the cluster's own storage (RUNYARD_STORAGE)
    deadline = time.monotonic() + 300
    while len(list(tune_dir.glob("t000*/checkpoint_000002"))) < 2:
        assert time.monotonic() < deadline, finished(hosts, job_id, 1)[1][-3000:]
        time.sleep(1)
    victim = hosts.cluster.nodes[-1].name
    assert kill_host(hosts.cluster, victim) > 0
    try:
        state, log = finished(hosts, job_id)
        assert state == "SUCCEEDED", log[-4000:]
    finally:
        add_worker(hosts.cluster, {"gpu_node": 1})  # the session's cluster, whole again

    failures = {TrialPayload.of(trial["config"]).trial_id: runtime["num_failures"]
                for trial, runtime in experiment_trials(tune_dir)}
    assert sorted(failures.values()) == [0, 1], failures  # the lost host's trial, retried once
    client = MlflowClient(hosts.cluster.tracking_uri)
    trials = [r for r in job_runs(hosts, monkeypatch, EXPERIMENT, job_id) if r.data.tags["runyard.kind"] == "trial"]
    assert len(trials) == 2 and {r.info.status for r in trials} == {"FINISHED"}
    for trial in trials:
        steps = sorted(m.step for m in client.get_metric_history(trial.info.run_id, "score"))
        assert steps == list(range(1, 11)), (trial.info.run_name, steps)
