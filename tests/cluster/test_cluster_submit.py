"""`runyard submit` to the real local multi-node cluster: validated here, run by `runyard run`
on the head node, followed with status/logs, stopped with stop, tracked in the cluster's
basic-auth MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard.launch import jobs_api

pytestmark = pytest.mark.slow

RUNYARD = Path(sys.executable).with_name("runyard")
TOY = """\
name: {name}
workload: toy.quadratic
config: {{sleep_s: {sleep}}}
stop: {{iterations: {iterations}}}
tracking: {{experiment: submitted}}
sweep:
  samples: 2
  metric: score
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def cli(project: Path, cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_TOKEN_PATH": str(cluster.token_path),
           "MLFLOW_TRACKING_USERNAME": cluster.tracking_username,
           "MLFLOW_TRACKING_PASSWORD": Path(cluster.tracking_password_path).read_text().strip()}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(RUNYARD), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def mlflow_client(cluster, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", cluster.tracking_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD",
                       Path(cluster.tracking_password_path).read_text().strip())
    return MlflowClient(cluster.tracking_uri)


def runs_of(client: MlflowClient, job_id: str) -> list:
    experiment = client.get_experiment_by_name("submitted")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`runyard.sweep_id` = '{job_id}'")


def test_submit_follow_and_stop(local_ray_cluster, tmp_path, monkeypatch):
    cluster = local_ray_cluster.cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_path))
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "quick.yaml").write_text(TOY.format(name="quick", sleep=0.1, iterations=3))
    (project / "jobs" / "long.yaml").write_text(TOY.format(name="long", sleep=1.0, iterations=600))
    address = ["--address", cluster.jobs_address]

    # A bad spec is refused here: nothing reaches the cluster.
    bad = cli(project, cluster, "submit", "jobs/quick.yaml", "--set", "config.x=high", *address)
    assert bad.returncode == 2 and "config.x" in bad.stderr

    quick = cli(project, cluster, "submit", "jobs/quick.yaml", "--id", "quick-1", *address)
    assert quick.returncode == 0, quick.stderr
    assert "submitted quick-1" in quick.stdout
    assert local_ray_cluster.token not in quick.stdout + quick.stderr
    long = cli(project, cluster, "submit", "jobs/long.yaml", "--id", "long-1", *address)
    assert long.returncode == 0, long.stderr

    state = jobs_api.wait("quick-1", cluster.jobs_address, timeout_s=300)
    assert state == "SUCCEEDED", "".join(jobs_api.logs("quick-1", cluster.jobs_address))
    status = cli(project, cluster, "status", "quick-1", *address)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = cli(project, cluster, "logs", "quick-1", *address)
    assert "FINISHED" in logs.stdout and "quick-1" in logs.stdout

    client = mlflow_client(cluster, monkeypatch)
    runs = runs_of(client, "quick-1")
    assert len(runs) == 3  # the parent and its 2 trials
    assert all(run.info.status == "FINISHED" for run in runs)

    deadline = time.monotonic() + 240
    while not [r for r in runs_of(client, "long-1") if r.data.tags.get("runyard.kind") == "trial"]:
        assert time.monotonic() < deadline, "the long sweep never started a trial"
        time.sleep(1)
    stop = cli(project, cluster, "stop", "long-1", *address)
    assert stop.returncode == 0, stop.stderr
    assert jobs_api.wait("long-1", cluster.jobs_address, timeout_s=120) == "STOPPED"
    deadline = time.monotonic() + 60
    while any(r.info.status == "RUNNING" for r in runs_of(client, "long-1")):
        assert time.monotonic() < deadline, ("runs of the stopped job stayed RUNNING:\n" +
                                             "".join(jobs_api.logs("long-1", cluster.jobs_address))[-3000:])
        time.sleep(1)
    assert {r.info.status for r in runs_of(client, "long-1")} == {"KILLED"}

    listing = cli(project, cluster, "ls", "--cluster", *address,
                  "--tracking-uri", cluster.tracking_uri)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "SUCCEEDED" in lines["quick-1"] and "FINISHED" in lines["quick-1"] and "2/2" in lines["quick-1"]
    assert "STOPPED" in lines["long-1"] and "KILLED" in lines["long-1"]


def test_runs_of_a_dead_cluster_driver_are_failed_from_the_laptop_with_the_jobs_message(
        local_ray_cluster, tmp_path, monkeypatch):
    """A driver killed outright ends nothing itself. The laptop never sees its process: it
    asks the Jobs API, and the job's own message becomes the runs' reason."""
    cluster = local_ray_cluster.cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_path))
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "long.yaml").write_text(TOY.format(name="doomed", sleep=1.0, iterations=600))
    address = ["--address", cluster.jobs_address]
    submitted = cli(project, cluster, "submit", "jobs/long.yaml", "--id", "doomed-1", *address)
    assert submitted.returncode == 0, submitted.stderr

    client = mlflow_client(cluster, monkeypatch)
    deadline = time.monotonic() + 240
    while not [r for r in runs_of(client, "doomed-1") if r.data.tags.get("runyard.kind") == "trial"]:
        assert time.monotonic() < deadline, "the sweep never started a trial"
        time.sleep(1)
    (parent,) = [r for r in runs_of(client, "doomed-1") if r.data.tags["runyard.kind"] == "sweep"]
    assert parent.data.tags["runyard.ray_job"] == "doomed-1"
    os.kill(int(parent.data.tags["runyard.driver"].rpartition(":")[2]), 9)  # SIGKILL
    assert jobs_api.wait("doomed-1", cluster.jobs_address, timeout_s=120) == "FAILED"
    message = jobs_api.status("doomed-1", cluster.jobs_address).message.strip().splitlines()[0][:500]
    assert {r.info.status for r in runs_of(client, "doomed-1")} == {"RUNNING"}

    listing = cli(project, cluster, "ls", "--cluster", *address, "--tracking-uri", cluster.tracking_uri)
    assert listing.returncode == 0, listing.stderr
    runs = runs_of(client, "doomed-1")
    assert {r.info.status for r in runs} == {"FAILED"}
    for run in runs:
        reason = run.data.tags["runyard.error"]
        assert reason.startswith("its driver, cluster job doomed-1, is FAILED: ") and message in reason


def test_the_submitted_runyard_runs_on_the_cluster_not_the_installed_one(
        local_ray_cluster, tmp_path, monkeypatch):
    """A researcher's edit to a workload reaches every trial: the laptop's runyard travels
    with the job (the nodes have another one installed)."""
    import shutil

    import runyard

    cluster = local_ray_cluster.cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_path))
    edited = tmp_path / "laptop" / "runyard"
    shutil.copytree(Path(runyard.__file__).parent, edited,
                    ignore=shutil.ignore_patterns("__pycache__"))
    toy = edited / "workloads" / "toy.py"
    source = toy.read_text()
    assert "        return {\"score\": score," in source
    toy.write_text(source.replace("        return {\"score\": score,",
                                  "        return {\"score\": score + 1000.0,"))
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "quick.yaml").write_text(TOY.format(name="edited", sleep=0.1, iterations=2))
    monkeypatch.setenv("PYTHONPATH", str(edited.parent))  # the laptop runs the edited copy
    submitted = cli(project, cluster, "submit", "jobs/quick.yaml", "--id", "edited-1",
                    "--address", cluster.jobs_address)
    assert submitted.returncode == 0, submitted.stderr
    state = jobs_api.wait("edited-1", cluster.jobs_address, timeout_s=300)
    assert state == "SUCCEEDED", "".join(jobs_api.logs("edited-1", cluster.jobs_address))[-3000:]
    trials = [r for r in runs_of(mlflow_client(cluster, monkeypatch), "edited-1")
              if r.data.tags["runyard.kind"] == "trial"]
    assert len(trials) == 2 and all(r.data.metrics["score"] > 999 for r in trials)
