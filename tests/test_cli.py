"""The CLI as a researcher meets it: help that teaches, exit codes, the MLflow UI."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from runyard_testing import REPO, RUNYARD, run_cli
from runyard.cli.main import main
from runyard.tracking.store import EXPERIMENT_KIND, MODEL_TRAINING, JobTracking


def test_help_lists_commands_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("validate", "run", "ls", "ui"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_ls_on_an_empty_directory_creates_nothing(workdir: Path, capsys):
    assert main(["ls"]) == 0
    assert "no runs yet" in capsys.readouterr().out
    assert not (workdir / ".runyard").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_ui(server: subprocess.Popen, port: int) -> list[str]:
    """The experiment names the UI's server lists, once it answers."""
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return [e["name"] for e in json.load(response)["experiments"]]
        except OSError:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the MLflow UI did not come up"
            time.sleep(1)


@pytest.mark.slow
def test_ui_serves_the_embedded_store_with_one_server_and_stops_it_on_sigterm(workdir: Path):
    tracking = JobTracking(f"sqlite:///{workdir / '.runyard' / 'mlflow.db'}", "ui-check")
    run = tracking.start_run("a-run", {"runyard.kind": "run"}, {})
    tracking.writer.end_run(run, "FINISHED")
    tracking.close()
    experiment = tracking.client.get_experiment_by_name("ui-check")
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING

    port = free_port()
    server = subprocess.Popen([str(RUNYARD), "ui", "--port", str(port)], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "ui-check" in wait_for_ui(server, port)
        started = psutil.Process(server.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in started]
        # `mlflow server` and the one uvicorn process it waits on: no job runner, no huey
        # consumers, no worker pool.
        assert len(started) == 2, commands
        assert not any("huey" in c or "mlflow.server.jobs" in c for c in commands), commands
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, out
    link = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert f"ui-check: {link}" in out
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_submit_refuses_a_request_no_node_type_of_the_cluster_config_can_hold():
    # Checked before anything is sent: the address is never contacted (nothing listens there).
    result = run_cli("submit", "jobs/digits_linear_sweep.yaml",
                     "--set", "resources.gpus_per_trial=16", "--cluster-config", "cluster.yaml",
                     "--address", "http://127.0.0.1:9", cwd=REPO)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "asks for {CPU=1, GPU=16}" in result.stderr and "short of: GPU" in result.stderr
    assert "submitted" not in result.stdout
