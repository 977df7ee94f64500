"""The tracking server runs on PostgreSQL with basic-auth (the cluster head node's setup)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from runyard.tracking.server import basic_auth_header, serve

pytestmark = pytest.mark.slow


def get(url, headers=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_tracking_server_on_postgres_with_basic_auth(postgres, tmp_path, monkeypatch):
    password = "pg-test-" + "x" * 12
    server = serve(postgres.uri, str(tmp_path / "artifacts"), state_dir=tmp_path / "tracking", password=password)
    try:
        command_line = open(f"/proc/{server.pid}/cmdline").read()
        assert postgres.uri.split(":")[2].split("@")[0] not in command_line, "DB password visible in ps"
        url = server.uri + "/api/2.0/mlflow/experiments/search?max_results=5"
        assert get(url) == 401
        assert get(url, {"Authorization": basic_auth_header("admin", password)}) == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("pg-check")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "loss", 0.25)
        (tmp_path / "note.txt").write_text("artifact through the proxy")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    finally:
        server.stop()

    # Runs, users and artifacts really went to PostgreSQL and the artifact store.
    import psycopg2

    with psycopg2.connect(postgres.uri) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT value FROM metrics WHERE key = 'loss'")
        assert cursor.fetchall() == [(0.25,)]
        cursor.execute("SELECT username, is_admin FROM users")
        assert cursor.fetchall() == [("admin", True)]
    assert list((tmp_path / "artifacts").rglob("note.txt"))
    assert password not in (tmp_path / "tracking" / "basic_auth.ini").read_text()
