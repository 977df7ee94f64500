"""The head node's tracking setup: `runyard tracking serve` on PostgreSQL with basic-auth.

Started as cluster.yaml starts it (backend URI in RUNYARD_TRACKING_BACKEND, never on a command
line) and stopped as it stops it (SIGTERM to the runyard process must take MLflow down too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runyard.processes import group_members
from runyard.tracking.server import basic_auth_header

pytestmark = pytest.mark.slow

SERVE = (
    "import argparse, sys\n"
    "from runyard.cli.cluster import add_cluster_commands\n"
    "parser = argparse.ArgumentParser(prog='runyard')\n"
    "add_cluster_commands(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def get(url, headers=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def command_lines_on_port(port: str) -> dict[int, bytes]:
    """pid -> command line of every process that has `port` as an argument."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if port.encode() in args.split(b"\0"):
            found[int(proc.name)] = args
    return found


def test_tracking_serve_on_postgres_with_basic_auth_until_sigterm(postgres, tmp_path, monkeypatch):
    password = "pg-test-" + "x" * 12
    db_password = postgres.uri.split(":")[2].split("@")[0]
    env = {**os.environ, "MLFLOW_TRACKING_PASSWORD": password, "RUNYARD_TRACKING_BACKEND": postgres.uri}
    command = [sys.executable, "-c", SERVE, "tracking", "serve", "--port", "0",
               "--artifacts", str(tmp_path / "artifacts"), "--state-dir", str(tmp_path / "tracking")]
    serve = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first_line = serve.stdout.readline()
        assert first_line.startswith("MLflow tracking server at http://127.0.0.1:"), first_line
        uri = first_line.split()[4]
        server_processes = command_lines_on_port(uri.rsplit(":", 1)[1])
        assert server_processes and all(db_password.encode() not in args for args in server_processes.values())
        assert db_password.encode() not in Path(f"/proc/{serve.pid}/cmdline").read_bytes()
        server_group = os.getpgid(next(iter(server_processes)))

        url = uri + "/api/2.0/mlflow/experiments/search?max_results=5"
        assert get(url) == 401
        assert get(url, {"Authorization": basic_auth_header("admin", password)}) == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("pg-check"))
        client.log_metric(run.info.run_id, "loss", 0.25)
        (tmp_path / "note.txt").write_text("artifact through the proxy")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0

    deadline = time.monotonic() + 20
    while group_members(server_group) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert group_members(server_group) == []

    # Runs, users and artifacts really went to PostgreSQL and the artifact store.
    import psycopg2

    with psycopg2.connect(postgres.uri) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT value FROM metrics WHERE key = 'loss'")
        assert cursor.fetchall() == [(0.25,)]
        cursor.execute("SELECT username, is_admin FROM users")
        assert cursor.fetchall() == [("admin", True)]
    assert list((tmp_path / "artifacts").rglob("note.txt"))
    assert password not in (tmp_path / "tracking" / "basic_auth.ini").read_text()
