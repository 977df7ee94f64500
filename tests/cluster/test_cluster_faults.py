"""Faults injected into a real local multi-node cluster while a runyard job runs on it.

* A worker node's raylet is SIGKILLed mid-sweep: the trial that ran there is retried from its
  last checkpoint (not from iteration 0) and every trial ends with exactly one FINISHED run.
* The MLflow tracking server is stopped and started again mid-sweep: what the job reported
  meanwhile waits in runyard's TrackingWriter and arrives after the restart, none of it lost.

The driver is `runyard run --address <GCS>` started from here (as on the head node), so the
test can watch Tune's experiment folder. Both tests leave the session cluster as they found
it (3 nodes, the tracking server on its port) for the tests after them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest
from mlflow.tracking import MlflowClient

from node_faults import add_worker
from runyard.execute.payload import TrialPayload
from runyard.ray_compat import experiment_trials
from runyard.launch import local_cluster
from runyard.launch.nodes import NodeRecord
from runyard.launch.process_nodes import free_ports
from runyard.processes import group_members, stop_group
from runyard.tracking.server import serve
from runyard.tracking.writer import RunRef, TrackingWriter

pytestmark = pytest.mark.slow

RUNYARD = Path(sys.executable).with_name("runyard")

NODE_KILL_SPEC = """\
name: node-kill
workload: toy.quadratic
config: {sleep_s: 1.0}
resources: {cpus_per_trial: 1, custom: {gpu_node: 1}}
stop: {iterations: ITERATIONS}
checkpoint: {every: 1, keep: 2}
tracking: {experiment: faults}
sweep:
  samples: 2
  metric: score
  max_concurrent: 2
  max_failures: 2
  space:
    config.x: {uniform: [0.0, 1.0]}
"""

TRACKING_RESTART_SPEC = """\
name: tracking-restart
workload: toy.quadratic
config: {sleep_s: 0.25}
stop: {iterations: ITERATIONS}
tracking: {experiment: faults}
sweep:
  samples: 3
  metric: score
  max_concurrent: 1
  space:
    config.x: {uniform: [0.0, 1.0]}
"""


def mlflow_client(cluster, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", cluster.tracking_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", Path(cluster.tracking_password_path).read_text().strip())
    return MlflowClient(cluster.tracking_uri)


@contextmanager
def driver_running(cluster, project: Path, spec: str, job_id: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`runyard run` joined to the cluster, with the environment its nodes have (Ray token,
    tracking URI and credentials, the cluster's ownership marker); killed on the way out if
    a failed assertion left it running."""
    (project / "jobs").mkdir(parents=True, exist_ok=True)
    (project / "jobs" / f"{job_id}.yaml").write_text(spec)
    log = project / f"{job_id}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(RUNYARD), "run", f"jobs/{job_id}.yaml", "--id", job_id, "--address", cluster.gcs_address],
            cwd=project, env=cluster.node_env(), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def trial_runs(client: MlflowClient, job_id: str) -> list:
    experiment = client.get_experiment_by_name("faults")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`runyard.sweep_id` = '{job_id}'")
    return [r for r in runs if r.data.tags.get("runyard.kind") == "trial"]


def score_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "score"))


def wait_for(condition, timeout_s: float, what: str, driver: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert driver.poll() is None, f"the driver exited before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def succeeded(driver: subprocess.Popen, log: Path, timeout_s: float) -> str:
    """The driver's output, once it has exited 0 within `timeout_s`."""
    try:
        code = driver.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the driver did not finish within {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert code == 0, output[-4000:]
    return output


def raylet_pid(node: NodeRecord) -> int:
    """The raylet of one node: the process in its `ray start` group running Ray's raylet binary."""
    for process in group_members(node.pid):
        try:
            if process.cmdline()[0].endswith("/raylet"):
                return process.pid
        except (psutil.NoSuchProcess, IndexError):
            continue
    raise AssertionError(f"no raylet found in {node.name}'s process group {node.pid}")


def tune_folder(cluster, job_id: str) -> Path:
    """The job's Tune experiment in the cluster's storage (its nodes' RUNYARD_STORAGE, which
    the driver has too)."""
    return Path(cluster.storage_dir) / "ray_results" / job_id


def checkpointed_iterations(cluster, job_id: str, trial_id: str) -> int:
    """The latest iteration a trial has checkpointed to the job's storage (0 if none yet)."""
    found = [int(path.name.rsplit("_", 1)[1]) for path in (tune_folder(cluster, job_id) / trial_id).glob("checkpoint_*")]
    # Tune numbers checkpoints from 0: checkpoint_000002 holds iteration 3.
    return max(found, default=-1) + 1


def failures_recorded(cluster, job_id: str) -> dict[str, int]:
    """How often Tune saw each trial fail (its experiment state: trial id -> num_failures)."""
    return {TrialPayload.of(trial["config"]).trial_id: runtime["num_failures"]
            for trial, runtime in experiment_trials(tune_folder(cluster, job_id))}


def test_worker_raylet_killed_mid_sweep_trials_resume_from_checkpoints(local_ray_cluster, tmp_path, monkeypatch):
    cluster = local_ray_cluster.cluster
    client = mlflow_client(cluster, monkeypatch)
    iterations = 30
    # Two trials, each needing the one gpu_node of a worker: both workers are busy, so the
    # killed node always takes a running trial with it.
    spec = NODE_KILL_SPEC.replace("ITERATIONS", str(iterations))
    with driver_running(cluster, tmp_path, spec, "node-kill") as (driver, log):
        wait_for(lambda: all(checkpointed_iterations(cluster, "node-kill", t) >= 3 for t in ("t0000", "t0001")),
                 180, "both trials to checkpoint iteration 3", driver, log)
        victim = next(node for node in cluster.nodes if node.name.startswith("worker") and group_members(node.pid))
        os.kill(raylet_pid(victim), signal.SIGKILL)
        # A replacement node, as an operator (or an autoscaler) would bring; it also leaves the
        # session cluster at full size for the tests after this one.
        add_worker(cluster, {"gpu_node": 1})
        output = succeeded(driver, log, 240)

    failures = failures_recorded(cluster, "node-kill")
    killed = [trial_id for trial_id, count in failures.items() if count]
    assert sorted(failures.values()) == [0, 1], f"expected one trial to lose its node once: {failures}\n{output[-3000:]}"
    killed_trial = killed[0]
    runs = trial_runs(client, "node-kill")
    assert sorted(r.data.tags["runyard.trial_id"] for r in runs) == ["t0000", "t0001"]  # one run per trial
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = score_steps(client, run.info.run_id)
        assert set(steps) == set(range(1, iterations + 1)), (run.data.tags["runyard.trial_id"], steps)
        # Resumed from a checkpoint, not from scratch: iteration 1 ran once. (An iteration
        # reported after the last checkpoint and before the kill may run twice.)
        assert steps.count(1) == 1 and steps.count(3) == 1, (run.data.tags["runyard.trial_id"], steps)
        if run.data.tags["runyard.trial_id"] != killed_trial:
            assert steps == list(range(1, iterations + 1))
    assert local_cluster.count_alive_nodes(cluster) == 3


def restart_tracking_server(cluster) -> None:
    """Stop the cluster's MLflow server and start it again on the same port, with the same
    backend, artifacts and credentials (as `local_cluster.up` started it)."""
    stop_group(cluster.tracking_pid, grace_s=5)
    tracking_dir = Path(cluster.state_dir) / "tracking"
    server = serve(
        f"sqlite:///{tracking_dir / 'mlflow.db'}", str(tracking_dir / "artifacts"),
        port=urlparse(cluster.tracking_uri).port, state_dir=tracking_dir,
        username=cluster.tracking_username, password=Path(cluster.tracking_password_path).read_text().strip(),
        extra_env={local_cluster.MARKER_ENV: cluster.cluster_id},
    )
    assert server.uri == cluster.tracking_uri
    cluster.tracking_pid = server.pid
    cluster.save()  # `down` stops the new server


def test_tracking_server_restart_mid_sweep_loses_no_metric(local_ray_cluster, tmp_path, monkeypatch):
    cluster = local_ray_cluster.cluster
    client = mlflow_client(cluster, monkeypatch)
    iterations = 30  # ~8 s per trial, 3 trials one after another: the outage spans trial ends and starts
    spec = TRACKING_RESTART_SPEC.replace("ITERATIONS", str(iterations))
    with driver_running(cluster, tmp_path, spec, "tracking-restart") as (driver, log):
        wait_for(lambda: (lambda runs: runs and len(score_steps(client, runs[0].info.run_id)) >= 5)(
            trial_runs(client, "tracking-restart")), 180, "the first trial to report", driver, log)
        outage_start = time.time()
        restart_tracking_server(cluster)
        outage_end = time.time()
        assert driver.poll() is None, "the job ended before the tracking server came back"
        succeeded(driver, log, 240)

    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`runyard.sweep_id` = 'tracking-restart'")
    assert len(runs) == 4  # the parent and its 3 trials, each once
    assert {r.info.status for r in runs} == {"FINISHED"}
    reported_during_outage = 0
    for run in runs:
        if run.data.tags["runyard.kind"] != "trial":
            continue
        for metric in ("score", "distance", "training_iteration", "time_total_s"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert sorted(m.step for m in history) == list(range(1, iterations + 1)), (metric, run.info.run_name)
            reported_during_outage += sum(outage_start * 1000 <= m.timestamp <= outage_end * 1000 for m in history)
    # The outage really hit the job: values were reported while no server answered.
    assert reported_during_outage > 0, (outage_start, outage_end)


def test_writer_waits_out_an_outage_longer_than_mlflows_own_retries(tmp_path, monkeypatch, caplog):
    """The writer alone against a real server that is not there yet: with MLflow's HTTP retries
    off, every call fails at once, so what survives is the writer's own retrying. Runs created,
    logged to and ended while no server answers all arrive, in order, once each."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "writer-outage-" + os.urandom(8).hex())
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_ports(1)[0]
    uri = f"http://127.0.0.1:{port}"
    writer = TrackingWriter(lambda: MlflowClient(uri), flush_s=0.2, max_retry_delay_s=1.0)
    server = None
    try:
        first = writer.create_run(lambda: "0", "first", {}, {"lr": "0.1"})  # "0": the Default experiment
        for step in range(20):
            writer.log_metrics(first, {"loss": float(step)}, step)
        writer.end_run(first, "FINISHED")
        second = writer.create_run(lambda: "0", "second", {}, {"lr": "0.2"}, parent=first)
        for step in range(10):
            writer.log_metrics(second, {"loss": float(step)}, step)
        writer.end_run(second, "FINISHED")
        time.sleep(3)  # several failed tries

        server = serve(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"), port=port,
                       state_dir=tmp_path / "server")
        writer.flush()
        # A request the server answers and refuses is not retried: it fails its caller at once.
        with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST"):
            writer.set_tags(RunRef.of("0" * 32), {"a": "b"}).result(timeout=30)
        writer.close()

        client = MlflowClient(uri)
        runs = {r.info.run_name: r for r in client.search_runs(["0"])}
        assert sorted(runs) == ["first", "second"]  # each created once, though retried
        assert [m.step for m in client.get_metric_history(first.id, "loss")] == list(range(20))
        assert sorted(m.step for m in client.get_metric_history(second.id, "loss")) == list(range(10))
        assert {r.info.status for r in runs.values()} == {"FINISHED"}
        assert runs["second"].data.params == {"lr": "0.2"}
        assert runs["second"].data.tags["mlflow.parentRunId"] == first.id
        assert sum("tracking server unreachable" in r.getMessage() for r in caplog.records) >= 2
    finally:
        writer.close()
        if server is not None:
            server.stop()
