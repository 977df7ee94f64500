"""The cluster/tracking/job subcommands: exit codes, messages and help texts."""

from __future__ import annotations

import pytest

from runyard.cli.main import main
from runyard.launch import jobs_api


def run_cli(*argv: str) -> int:
    """The `runyard` command in this process: its parser and its one error path."""
    return main(list(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["cluster", "local", "up", "--help"],
        ["cluster", "up", "--help"],
        ["tracking", "serve", "--help"],
        ["status", "--help"],
        ["logs", "--help"],
        ["stop", "--help"],
    ],
)
def test_help_texts_teach_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "runyard " in text


def test_bad_resources_json_is_exit_2(tmp_path, capsys):
    assert run_cli("cluster", "local", "up", "--resources", "{gpu_node: 1", "--state-dir", str(tmp_path)) == 2
    assert "--resources: not JSON" in capsys.readouterr().err
    assert not (tmp_path / "state.json").exists()


def test_down_without_a_cluster_is_exit_2(tmp_path, capsys):
    assert run_cli("cluster", "local", "down", "--state-dir", str(tmp_path)) == 2
    assert "runyard cluster local up" in capsys.readouterr().err


def test_cloud_cluster_without_config_is_exit_2(tmp_path, capsys):
    assert run_cli("cluster", "up", "--config", str(tmp_path / "missing.yaml"), "-y") == 2
    assert "--config" in capsys.readouterr().err


def test_tracking_serve_refuses_the_default_password(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "password1234")
    assert run_cli("tracking", "serve", "--state-dir", str(tmp_path), "--port", "0") == 2
    assert "old default admin password" in capsys.readouterr().err


def test_job_commands_without_a_cluster_are_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOBS_ADDRESS", raising=False)
    assert run_cli("status", "--state-dir", str(tmp_path)) == 2
    assert "no Ray cluster given" in capsys.readouterr().err


@pytest.mark.slow
def test_status_logs_stop_on_the_local_cluster(local_ray_cluster, tmp_path, capsys):
    cluster = local_ray_cluster.cluster
    common = ["--address", cluster.jobs_address, "--state-dir", cluster.state_dir]
    (tmp_path / "hi.py").write_text("print('hello from the cluster')\n")
    job = jobs_api.submit("python hi.py", cluster.jobs_address, tmp_path, {"API_TOKEN": "tok-visible-nowhere"}, state_dir=cluster.state_dir).job_id
    jobs_api.wait(job, cluster.jobs_address, timeout_s=120, state_dir=cluster.state_dir)
    capsys.readouterr()

    assert run_cli("status", *common) == 0
    assert job in capsys.readouterr().out
    assert run_cli("status", job, *common) == 0
    shown = capsys.readouterr().out
    assert "SUCCEEDED" in shown and "python hi.py" in shown
    assert "tok-visible-nowhere" not in shown and "API_TOKEN" in shown
    assert run_cli("logs", job, *common) == 0
    assert "hello from the cluster" in capsys.readouterr().out
    assert run_cli("stop", job, *common) == 0
    assert "already finished" in capsys.readouterr().out
    assert run_cli("logs", "raysubmit_nope", *common) == 2
    assert "not known" in capsys.readouterr().err

    assert run_cli("cluster", "local", "status", "--state-dir", cluster.state_dir) == 0
    shown = capsys.readouterr().out
    assert "nodes alive: 3 of 3" in shown and cluster.jobs_address in shown

