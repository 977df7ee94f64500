"""The warm Ray (runyard.launch.warm_ray): a run joins the Ray an earlier run left, with
its own environment and working directory; a run beside it starts its own; Ctrl-C and
SIGKILL leave the run resumable on it; it goes after its idle time or `runyard ray stop`;
bad input starts none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import (CTRL_C_AS_AT_A_TERMINAL, RUNYARD, embedded_ray_sessions, ledger_of,
                             run_cli, tracking_uri, wait_for_checkpoint)
from runyard.launch import warm_ray

PROBE = '''\
"""Writes what its worker sees (folder, environment) where its config says, then counts."""
import json
import os
import time
from pathlib import Path

from pydantic import Field

from runyard.workloads import Workload, WorkloadConfig


class ProbeConfig(WorkloadConfig):
    out: str = Field(description="where to write what the worker sees")
    slow_while: str = Field("", description="each step takes 0.25 s while this file exists")


class Probe(Workload):
    Config = ProbeConfig
    metrics = {"steps": "max"}

    def setup(self, config, context):
        self.config, self.t = config, 0
        Path(config.out).write_text(json.dumps({
            "cwd": os.getcwd(), "pid": os.getpid(),
            "mark": os.environ.get("PROBE_MARK"), "first_only": os.environ.get("FIRST_ONLY"),
            "token": os.environ.get("PROBE_API_TOKEN")}))

    def step(self):
        if self.config.slow_while and Path(self.config.slow_while).exists():
            time.sleep(0.25)
        self.t += 1
        return {"steps": float(self.t)}

    def save(self, directory):
        (Path(directory) / "t.json").write_text(json.dumps(self.t))

    def restore(self, directory):
        self.t = json.loads((Path(directory) / "t.json").read_text())
'''


def project(folder: Path, name: str, iterations: int = 2, slow_while: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text(PROBE)
    spec = folder / f"{name}.yaml"
    spec.write_text(f"name: {name}\nworkload: probe:Probe\n"
                    f"config: {{out: '{folder / (name + '.seen.json')}', slow_while: '{slow_while}'}}\n"
                    f"stop: {{iterations: {iterations}}}\n"
                    "checkpoint: {every: 1, keep: 2}\n"
                    f"tracking: {{experiment: {name}}}\n")
    return spec


def seen(spec: Path) -> dict:
    return json.loads(spec.with_suffix(".seen.json").read_text())


@pytest.fixture
def warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A warm-Ray folder of this test's own, stopped and checked clean afterwards."""
    place = tmp_path / "warm"
    monkeypatch.setenv(warm_ray.ENABLED_ENV, "1")
    monkeypatch.setenv(warm_ray.FOLDER_ENV, str(place))
    monkeypatch.delenv("FIRST_ONLY", raising=False)
    yield place
    state = warm_ray.read_state(place)
    if state is not None:
        warm_ray.stop_holder(state)
        assert not warm_ray.read_state(place) or not state.holder_alive()
        assert not Path(state.ray_dir).exists()


def holder(place: Path) -> warm_ray.WarmRay:
    state = warm_ray.read_state(place)
    assert state is not None and state.holder_alive(), "no warm Ray is running"
    return state


def processes_in(ray_dir: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if any(ray_dir in part for part in process.cmdline()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_the_next_run_joins_the_ray_the_last_one_left_with_its_own_environment_and_folder(
        tmp_path: Path, warm: Path):
    first_project, second_project = tmp_path / "first", tmp_path / "second"
    bad = project(first_project, "bad")
    bad.write_text(bad.read_text().replace("iterations: 2", "iterations: two"))
    refused = run_cli("run", str(bad), cwd=first_project)
    assert refused.returncode == 2 and "iterations" in refused.stderr
    assert warm_ray.read_state(warm) is None, "bad input started a warm Ray"

    first = project(first_project, "first")
    result = run_cli("run", str(first), cwd=first_project,
                     env={"PROBE_MARK": "first", "FIRST_ONLY": "yes"})
    assert result.returncode == 0, result.stdout + result.stderr
    started = holder(warm)
    assert (seen(first)["cwd"], seen(first)["mark"], seen(first)["first_only"]) == (
        str(first_project), "first", "yes")

    cold_sessions = embedded_ray_sessions()
    second = project(second_project, "second")
    token = "s3cr3t-7d1e-in-no-log"
    result = run_cli("run", str(second), "--id", "second", cwd=second_project,
                     env={"PROBE_MARK": "second", "PROBE_API_TOKEN": token})
    assert result.returncode == 0, result.stdout + result.stderr
    assert holder(warm) == started  # the same Ray, joined
    assert embedded_ray_sessions() == cold_sessions  # and no Ray of its own
    # Its worker saw this run's folder and environment, nothing of the run that started it.
    assert seen(second)["cwd"] == str(second_project)
    assert (seen(second)["mark"], seen(second)["first_only"]) == ("second", None)
    # A credential reaches the worker, but not through Ray's runtime_env, which Ray logs.
    assert seen(second)["token"] == token
    assert not [path for path in Path(started.ray_dir).rglob("*")
                if path.is_file() and token.encode() in path.read_bytes()]
    assert list(warm.glob("run-*")) == []  # its file went with the run
    assert len(list((Path(started.ray_dir) / "ray").glob("session_2*"))) == 1
    client = MlflowClient(tracking_uri(second_project))
    assert client.get_run(ledger_of(second_project, "second").run_id).info.status == "FINISHED"

    status = run_cli("ray", "status", cwd=tmp_path)
    assert status.returncode == 0 and started.address in status.stdout, status.stdout
    stopped = run_cli("ray", "stop", cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped the warm Ray" in stopped.stdout, stopped.stdout
    assert not started.holder_alive() and warm_ray.read_state(warm) is None
    assert not Path(started.ray_dir).exists() and processes_in(started.ray_dir) == []
    assert "no warm Ray" in run_cli("ray", "status", cwd=tmp_path).stdout


def test_a_run_beside_one_on_the_warm_ray_starts_its_own_and_ctrl_c_or_sigkill_leave_it_resumable(
        workdir: Path, warm: Path):
    slow = workdir / "slow"
    slow.touch()
    long = project(workdir, "long", iterations=400, slow_while=str(slow))
    driver = subprocess.Popen([*CTRL_C_AS_AT_A_TERMINAL, str(RUNYARD), "run", str(long), "--id", "long"],
                              cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = workdir / ".runyard" / "ray_results" / "long"
    wait_for_checkpoint(driver, results, "*/checkpoint_000002")
    joined = holder(warm)

    cold_sessions = embedded_ray_sessions()
    beside = project(workdir, "beside")
    result = run_cli("run", str(beside), cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(embedded_ray_sessions() - cold_sessions) == 1  # its own Ray, beside the warm one

    driver.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    client = MlflowClient(tracking_uri(workdir))
    run_id = ledger_of(workdir, "long").run_id  # one trial: the job's run is the trial's
    assert client.get_run(run_id).info.status == "KILLED"
    assert holder(warm) == joined  # Ctrl-C ends the run, not the warm Ray

    # SIGKILL on the resumed run: the kernel drops its lease, Ray ends its workers.
    resumed = subprocess.Popen([str(RUNYARD), "resume", "long"], cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = max(int(path.name.rsplit("_", 1)[1]) for path in results.glob("*/checkpoint_*"))
    wait_for_checkpoint(resumed, results, f"*/checkpoint_{before + 2:06d}")
    worker = seen(long)["pid"]
    resumed.kill()
    resumed.wait()
    deadline = time.monotonic() + 60
    while psutil.pid_exists(worker) and psutil.Process(worker).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed run's worker outlived it"
        time.sleep(0.5)

    slow.unlink()
    result = run_cli("resume", "long", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert holder(warm) == joined
    trial = client.get_run(run_id)
    assert trial.info.status == "FINISHED" and trial.data.metrics["steps"] == 400


def test_a_warm_ray_goes_after_its_idle_time(workdir: Path, warm: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(warm_ray.IDLE_ENV, "3")
    result = run_cli("run", str(project(workdir, "brief")), cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    started = holder(warm)
    deadline = time.monotonic() + 90
    while started.holder_alive():
        assert time.monotonic() < deadline, "the warm Ray outlived its idle time"
        time.sleep(1)
    assert warm_ray.read_state(warm) is None
    assert not Path(started.ray_dir).exists() and processes_in(started.ray_dir) == []


def test_warm_rays_off_leave_nothing_running(workdir: Path, warm: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(warm_ray.ENABLED_ENV, "0")
    sessions = embedded_ray_sessions()
    result = run_cli("run", str(project(workdir, "cold")), cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert warm_ray.read_state(warm) is None
    assert len(embedded_ray_sessions() - sessions) == 1
