"""`runyard cluster local up --hosts N --slurm`: a real Slurm (slurmctld and munged on this
machine, the login node; a munged and a slurmd on each namespaced host) that jobs reach with
srun and sbatch through the SLURM_CONF it prints; and `runyard submit --slurm`, whose batch
script starts the job's own Ray on the nodes it was given.

The slow tests share one cluster of two hosts (conftest.local_slurm, which also checks that
`down` leaves nothing behind); they are skipped, with the reason, where it cannot be made
(not root, Slurm not installed: `make system-deps`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from runyard_testing import RUNYARD, job_runs, namespaced_hosts_unavailable, toy_sweep

from runyard.data.imagenet import prepare_imagenet
from runyard.data.synth import write_synthetic_imagenet
from runyard.errors import UserError
from runyard.launch import local_cluster, slurm_hosts
from runyard.launch.slurm import SlurmOptions


# ---------------------------------------------------------------- refused before anything is made


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--slurm"], "--slurm: give --hosts N"),
        (["--hosts", "2", "--slurm", "--resources", '{"gpu_node": 1}'], "Ray node options"),
        (["--hosts", "2", "--slurm", "--workers", "1"], "give one"),
    ],
)
def test_slurm_cli_refuses_bad_arguments_before_making_anything(tmp_path, arguments, message):
    if "--hosts" in arguments and "--workers" in arguments and namespaced_hosts_unavailable():
        pytest.skip(namespaced_hosts_unavailable())
    completed = subprocess.run([str(RUNYARD), "cluster", "local", "up", *arguments, "--state-dir", str(tmp_path)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_slurm_without_the_daemons_says_how_to_install_them(tmp_path, monkeypatch):
    reason = namespaced_hosts_unavailable()
    if reason:
        pytest.skip(reason)
    which = shutil.which
    monkeypatch.setattr(slurm_hosts.shutil, "which", lambda name: None if name == "slurmctld" else which(name))
    with pytest.raises(UserError, match=r"--slurm: slurmctld not found.*make system-deps"):
        local_cluster.up(hosts=2, slurm=True, state_dir=tmp_path, echo=lambda _: None)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


# ---------------------------------------------------------------- on the cluster


@pytest.mark.slow
def test_srun_runs_a_step_on_each_host(local_slurm):
    # Each task prints its host and network namespace: two machines, neither of them this one.
    step = local_slurm.slurm("srun", "--nodes", "2", "--ntasks-per-node", "1", "sh", "-c",
                             "echo $(hostname) $(readlink /proc/self/ns/net)")
    assert step.returncode == 0, step.stderr
    seen = dict(line.split() for line in step.stdout.splitlines())
    assert sorted(seen) == ["n1", "n2"]
    assert len({*seen.values(), os.readlink("/proc/self/ns/net")}) == 3
    assert "n1 " in local_slurm.up_output and "SLURM_CONF=" in local_slurm.up_output


@pytest.mark.slow
def test_sbatch_runs_a_script_on_the_hosts_with_the_storage_shared(local_slurm, tmp_path):
    storage = local_slurm.storage
    marker = f"sbatch-{local_slurm.cluster.cluster_id}"
    script = storage / f"{marker}.sh"
    # The batch script runs on the first node; its step on both. Each writes into the shared
    # storage and into its own /tmp.
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        #SBATCH --nodes=2
        #SBATCH --output={storage}/{marker}-%j.out
        echo "batch on $(hostname)"
        srun --ntasks-per-node=1 sh -c 'hostname > {storage}/{marker}-step-$(hostname); touch /tmp/{marker}'
        """))
    submitted = local_slurm.slurm("sbatch", "--parsable", "--wait", str(script))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    output = (storage / f"{marker}-{job_id}.out").read_text()
    assert output.splitlines()[0] == "batch on n1", output
    assert sorted(p.read_text().strip() for p in storage.glob(f"{marker}-step-*")) == ["n1", "n2"]
    # /tmp is each host's own: nothing reached this machine's.
    assert not Path(f"/tmp/{marker}").exists()
    # The job is done and Slurm calls both hosts usable again.
    status = subprocess.run([str(RUNYARD), "cluster", "local", "status", "--state-dir", local_slurm.cluster.state_dir],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "nodes alive: 3 of 3" in status.stdout and "SLURM_CONF=" in status.stdout


# ---------------------------------------------------------------- runyard submit --slurm


def test_submit_with_slurm_needs_a_shared_storage(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "toy.yaml").write_text(toy_sweep("slurm-refused", "slurm-refused", 0.0, 1))
    env = {k: v for k, v in os.environ.items() if k != "RUNYARD_STORAGE"}
    for arguments, message in ((["--slurm", "--storage", "s3://bucket/prefix"], "--storage: a Slurm job"),
                               (["--nodes", "2"], "add --slurm")):
        completed = subprocess.run([str(RUNYARD), "submit", "jobs/toy.yaml", *arguments], cwd=project, env=env,
                                   capture_output=True, text=True, timeout=60)
        assert completed.returncode == 2 and message in completed.stderr, (arguments, completed.stderr)
    assert not (tmp_path / "slurm-jobs").exists()
    with pytest.raises(UserError, match="--nodes: 0"):
        SlurmOptions(nodes=0).check()


def wait_for_slurm_job(local_slurm, slurm_id: str, timeout_s: float) -> str:
    """Slurm's final state of the job, waiting at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = local_slurm.slurm("scontrol", "show", "job", "--oneliner", slurm_id)
        state = dict(w.split("=", 1) for w in shown.stdout.split() if "=" in w).get("JobState", "")
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", ""):
            return state
        assert time.monotonic() < deadline, f"job {slurm_id} still {state} after {timeout_s:.0f} s"
        time.sleep(2)


# Two nodes, each starting from this test's virtualenv.
NODES = ["--slurm", "--nodes", "2", "--setup", f"source {Path(sys.prefix) / 'bin' / 'activate'}"]


def on_the_login_node(local_slurm, project: Path):
    """`runyard ARGS --storage S`, typed in `project` on the login node."""
    login = login_env(local_slurm)

    def runyard(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(RUNYARD), *args, "--storage", str(local_slurm.storage)], cwd=project,
                              env=login, capture_output=True, text=True, timeout=120)

    return runyard


# 0.6 CPU per rank and one CPU per Slurm node for the job: the two ranks sit on both nodes.
DDP = """\
name: ddp-slurm
workload: sl.linear
data: {{path: {data}}}
config: {{lr: 0.05, batch_size: 128, init_std: 0.01, optimizer: sgd}}
resources: {{cpus_per_trial: 0.6, workers: 2}}
stop: {{iterations: 2}}
checkpoint: {{every: 1}}
tracking: {{experiment: slurm-ddp}}
"""


@pytest.mark.slow
def test_a_checkpointing_sweep_on_slurm_stopped_and_resumed_finishes_on_both_hosts(local_slurm, tmp_path,
                                                                                     monkeypatch):
    """submit --slurm --nodes 2, status, logs, a graceful stop, resume in a new allocation: the
    sweep finishes in the same runs, one trial on each host, and `best` reads it back here.
    Beside it, on the same nodes, a data-parallel trial whose two ranks sit on both nodes.
    (One test for all of it: each allocation starts a Ray, 15-20 s on 2 shared cores.)"""
    cluster = local_slurm.cluster
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    # Two trials of about 12 s each, checkpointing every step: stopped before they end.
    (project / "jobs" / "long.yaml").write_text(toy_sweep("long", "slurm-stop", 0.4, 30))
    tree = write_synthetic_imagenet(tmp_path / "jpeg", classes=4, train_per_class=32, val_per_class=8,
                                    min_side=20, max_side=28, seed=0)
    shards = local_slurm.storage / f"shards-{tmp_path.name}"  # every node reads it at this path
    prepare_imagenet(tree, shards, size=16, workers=1, images_per_shard=64)
    (project / "jobs" / "ddp.yaml").write_text(DDP.format(data=shards))
    job_id, ddp_id = f"slurm-stop-{cluster.cluster_id[:6]}", f"slurm-ddp-{cluster.cluster_id[:6]}"
    runyard = on_the_login_node(local_slurm, project)

    submit = runyard("submit", "jobs/long.yaml", *NODES, "--id", job_id)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    ddp = runyard("submit", "jobs/ddp.yaml", *NODES, "--id", ddp_id)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    folder = local_slurm.storage / "slurm-jobs" / job_id
    slurm_id = (folder / "slurm_job_id").read_text().strip()
    results = local_slurm.storage / "ray_results" / job_id
    deadline = time.monotonic() + 180
    while len({path.parent for path in results.glob("t000*/checkpoint_*")}) < 2:
        assert time.monotonic() < deadline, runyard("logs", job_id).stdout[-3000:]
        time.sleep(1)

    status = runyard("status", job_id)
    assert status.returncode == 0, status.stderr
    assert "RUNNING" in status.stdout and "n[1-2]" in status.stdout and slurm_id in status.stdout, status.stdout
    stop = runyard("stop", job_id)
    assert stop.returncode == 0 and "stop requested" in stop.stdout, stop.stdout + stop.stderr
    wait_for_slurm_job(local_slurm, slurm_id, timeout_s=120)
    logs = runyard("logs", job_id)
    assert "t0000 started" in logs.stdout and f"continue it: runyard resume {job_id}" in logs.stdout, logs.stdout[-3000:]
    # The driver ended both trials' runs KILLED (resumable), not left RUNNING nor FAILED.
    stopped = trial_runs(local_slurm, monkeypatch, job_id)
    assert len(stopped) == 2 and {run.info.status for run in stopped.values()} == {"KILLED"}, logs.stdout[-3000:]
    assert "had already finished" in runyard("stop", job_id).stdout

    # The data-parallel trial: its two ranks on the two nodes, in one FINISHED run.
    ddp_slurm_id = (local_slurm.storage / "slurm-jobs" / ddp_id / "slurm_job_id").read_text().strip()
    state = wait_for_slurm_job(local_slurm, ddp_slurm_id, timeout_s=240)
    assert state == "COMPLETED", runyard("logs", ddp_id).stdout[-4000:]
    (run,) = job_runs(local_slurm, monkeypatch, "slurm-ddp", ddp_id)
    assert run.info.status == "FINISHED"
    ranks = json.loads(Path(MlflowClient(cluster.tracking_uri).download_artifacts(
        run.info.run_id, "ranks.json", str(tmp_path))).read_text())
    assert sorted(rank["host"] for rank in ranks) == ["n1", "n2"], ranks
    assert_no_ray_left(local_slurm)

    resumed = runyard("resume", job_id, *NODES)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = (folder / "slurm_job_id").read_text().strip()
    assert second != slurm_id
    state = wait_for_slurm_job(local_slurm, second, timeout_s=240)
    assert state == "COMPLETED", runyard("logs", job_id).stdout[-4000:]
    # The same runs went on to the end, each metric step logged once.
    finished = trial_runs(local_slurm, monkeypatch, job_id)
    assert finished.keys() == stopped.keys() and {run.info.status for run in finished.values()} == {"FINISHED"}
    client = MlflowClient(cluster.tracking_uri)
    for run_id in finished:
        steps = [point.step for point in client.get_metric_history(run_id, "score")]
        assert len(steps) == len(set(steps)) and len(steps) == 30, steps
    # Each trial's run names the host it ran on: one on each. Its checkpoints are in the
    # shared storage, and `best` reads the job back on the login node.
    assert sorted(run.data.tags["runyard.host"].split()[0] for run in finished.values()) == ["n1", "n2"]
    best = runyard("best", job_id)
    assert best.returncode == 0 and "t0000" in best.stdout and "t0001" in best.stdout, best.stdout + best.stderr
    assert_no_ray_left(local_slurm)


@pytest.mark.slow
def test_a_sweep_past_its_wall_time_is_requeued_and_finishes_beside_another_job(local_slurm, tmp_path,
                                                                              monkeypatch):
    """Two jobs at once on the same two nodes. One runs out of wall time mid-sweep: Slurm
    signals it 45 s before the end, it stops resumably, stops its own Ray (the other job's
    goes on), requeues itself and finishes in a new allocation in the same runs. The other job
    finishes untouched. (One test for both: each allocation starts a Ray on 2 shared cores.)

    The short wall time is given once the trials run (`scontrol update TimeLimit`, as an admin
    may; Slurm keeps it in whole minutes), not with --time at submit: at load 12 here the job's Ray and driver took over a
    minute to start, and a 2-minute --time signalled the driver before its first trial."""
    cluster = local_slurm.cluster
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    # A checkpoint every 5 steps: a resume may redo up to 4, logged once all the same.
    # 90 steps: still running when the signal comes (at most 65 s after the limit is cut).
    (project / "jobs" / "wall.yaml").write_text(toy_sweep("wall", "slurm-wall", 1.0, 90, every=5))
    # Still running when the first job's first allocation has ended.
    (project / "jobs" / "beside.yaml").write_text(toy_sweep("beside", "slurm-beside", 1.0, 120, every=5))
    wall_id, beside_id = f"slurm-wall-{cluster.cluster_id[:6]}", f"slurm-beside-{cluster.cluster_id[:6]}"
    runyard = on_the_login_node(local_slurm, project)

    for spec, job_id, limit in (("wall", wall_id, ["--time", "00:10:00", "--stop-lead", "45"]),
                                ("beside", beside_id, [])):
        submit = runyard("submit", f"jobs/{spec}.yaml", *NODES, *limit, "--id", job_id)
        assert submit.returncode == 0, submit.stdout + submit.stderr
    wall = (local_slurm.storage / "slurm-jobs" / wall_id / "slurm_job_id").read_text().strip()
    beside = (local_slurm.storage / "slurm-jobs" / beside_id / "slurm_job_id").read_text().strip()
    results = local_slurm.storage / "ray_results" / wall_id
    deadline = time.monotonic() + 240
    while len({path.parent for path in results.glob("t000*/checkpoint_*")}) < 2:
        assert time.monotonic() < deadline, runyard("logs", wall_id).stdout[-3000:]
        time.sleep(1)
    # Its wall time now ends 50-110 s from here (Slurm keeps limits in whole minutes); Slurm
    # signals 45-75 s before the end (it looks at time limits every 30 s): within 65 s, with
    # its trials mid-sweep.
    hours, minutes, seconds = (int(part) for part in slurm_job(local_slurm, wall)["RunTime"].split(":"))
    limit_min = -(-(hours * 3600 + minutes * 60 + seconds + 50) // 60)
    cut = local_slurm.slurm("scontrol", "update", f"JobId={wall}", f"TimeLimit={limit_min}")
    assert cut.returncode == 0, cut.stderr
    deadline = time.monotonic() + 180
    while slurm_job(local_slurm, wall).get("Restarts", "0") == "0":
        assert time.monotonic() < deadline, runyard("logs", wall_id).stdout[-3000:]
        time.sleep(1)
    # The wall time, not a user, stopped it: its runs ended KILLED (resumable) and it requeued.
    logs = runyard("logs", wall_id).stdout
    assert f"requeueing Slurm job {wall} to continue" in logs and "continue it: runyard resume" in logs, logs[-3000:]
    stopped = trial_runs(local_slurm, monkeypatch, wall_id, "slurm-wall")
    assert len(stopped) == 2 and {run.info.status for run in stopped.values()} == {"KILLED"}, logs[-3000:]
    # It stopped exactly its own Ray: the other job's is alive on both nodes.
    for name in ("n1", "n2"):
        raylets = [line for line in local_slurm.on_host(name, "ps", "-eo", "args").stdout.splitlines()
                   if "raylet/raylet" in line]
        assert not [line for line in raylets if f"ray-slurm-{wall}.0" in line], (name, raylets)
        assert len([line for line in raylets if f"ray-slurm-{beside}.0" in line]) == 1, (name, raylets)
    assert slurm_job(local_slurm, beside)["JobState"] == "RUNNING"
    # Room for the rest in the second allocation, which would otherwise be stopped and requeued
    # again at once (its limit is the one cut above).
    raised = local_slurm.slurm("scontrol", "update", f"JobId={wall}", "TimeLimit=00:10:00")
    assert raised.returncode == 0, raised.stderr

    for slurm_id, job_id in ((wall, wall_id), (beside, beside_id)):
        state = wait_for_slurm_job(local_slurm, slurm_id, timeout_s=240)
        assert state == "COMPLETED", runyard("logs", job_id).stdout[-4000:]
    status = runyard("status", wall_id)
    assert "requeued: 1 times" in status.stdout, status.stdout
    assert "(restart 1)" in runyard("logs", wall_id).stdout
    client = MlflowClient(cluster.tracking_uri)
    for job_id, experiment, steps_each, before in ((wall_id, "slurm-wall", 90, stopped),
                                                   (beside_id, "slurm-beside", 120, None)):
        finished = trial_runs(local_slurm, monkeypatch, job_id, experiment)
        assert len(finished) == 2 and {run.info.status for run in finished.values()} == {"FINISHED"}
        # The requeued job went on in the same runs, each metric step logged once.
        assert before is None or finished.keys() == before.keys()
        for run_id in finished:
            steps = [point.step for point in client.get_metric_history(run_id, "score")]
            assert len(steps) == len(set(steps)) == steps_each, (job_id, steps)
    assert_no_ray_left(local_slurm)


def slurm_job(local_slurm, slurm_id: str) -> dict[str, str]:
    shown = local_slurm.slurm("scontrol", "show", "job", "--oneliner", slurm_id)
    return dict(word.split("=", 1) for word in shown.stdout.split() if "=" in word)


def trial_runs(local_slurm, monkeypatch, job_id: str, experiment: str = "slurm-stop") -> dict:
    """The job's trial runs in the cluster's MLflow, by run id."""
    runs = job_runs(local_slurm, monkeypatch, experiment, job_id)
    return {run.info.run_id: run for run in runs if run.data.tags.get("runyard.kind") == "trial"}


def login_env(local_slurm) -> dict[str, str]:
    """The login node's environment: Slurm's config and the tracking server's credentials."""
    cluster = local_slurm.cluster
    env = {**os.environ, **slurm_hosts.slurm_env(cluster), "MLFLOW_TRACKING_URI": cluster.tracking_uri,
           "MLFLOW_TRACKING_USERNAME": cluster.tracking_username,
           "MLFLOW_TRACKING_PASSWORD": local_slurm.tracking_password}
    env.pop("RUNYARD_STORAGE", None)
    return env


def assert_no_ray_left(local_slurm) -> None:
    """No Ray process is left on either host: each job stopped its own."""
    for name in ("n1", "n2"):
        left = local_slurm.slurm("srun", "--nodes", "1", "--nodelist", name, "sh", "-c",
                                 "ps -eo comm | grep -c -E 'raylet|gcs_server' || true")
        assert left.stdout.strip() == "0", (name, left.stdout, left.stderr)
