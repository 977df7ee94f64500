"""The local cluster is secure by default: Ray Jobs API and MLflow refuse anonymous callers.

Runs against the real multi-node cluster from conftest.local_ray_cluster (Ray token auth on,
MLflow basic-auth), over raw HTTP so the checks do not depend on runyard's own client.
"""

from __future__ import annotations

import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runyard.errors import UserError
from runyard.launch import jobs_api
from runyard.tracking.server import LEGACY_DEFAULT_ADMIN_PASSWORD, basic_auth_header, serve

pytestmark = pytest.mark.slow

JOBS_ENDPOINTS = [
    ("GET", "/api/jobs/"),  # list
    ("POST", "/api/jobs/"),  # submit
    ("POST", "/api/jobs/raysubmit_doesnotexist/stop"),  # stop
    ("DELETE", "/api/jobs/raysubmit_doesnotexist"),  # delete
    ("GET", "/api/jobs/raysubmit_doesnotexist/logs"),
]


def http_status(method: str, url: str, headers: dict | None = None) -> int:
    body = b'{"entrypoint": "echo pwned"}' if method == "POST" else None
    request = urllib.request.Request(url, method=method, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("method,path", JOBS_ENDPOINTS)
def test_jobs_api_without_token_answers_401(local_ray_cluster, method, path):
    assert http_status(method, local_ray_cluster.cluster.jobs_address + path) == 401


@pytest.mark.parametrize("method,path", JOBS_ENDPOINTS)
def test_jobs_api_with_wrong_token_answers_403(local_ray_cluster, method, path):
    wrong = {"Authorization": "Bearer " + "0" * 64}
    assert http_status(method, local_ray_cluster.cluster.jobs_address + path, wrong) == 403


def test_jobs_api_with_the_token_answers(local_ray_cluster):
    # Proves the 401/403 above come from authentication, not from a broken endpoint.
    right = {"Authorization": f"Bearer {local_ray_cluster.token}"}
    assert http_status("GET", local_ray_cluster.cluster.jobs_address + "/api/jobs/", right) == 200


def test_no_anonymous_job_was_submitted(local_ray_cluster):
    entrypoints = [job.entrypoint for job in jobs_api.list_jobs(local_ray_cluster.cluster.jobs_address, state_dir=local_ray_cluster.cluster.state_dir)]
    assert "echo pwned" not in entrypoints


def test_runyard_client_with_wrong_token_is_a_user_error(local_ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 64)
    with pytest.raises(UserError, match="rejected the Ray auth token"):
        jobs_api.list_jobs(local_ray_cluster.cluster.jobs_address, state_dir=local_ray_cluster.cluster.state_dir)


def test_secrets_are_owner_only_files(local_ray_cluster):
    for path in (local_ray_cluster.cluster.token_path, local_ray_cluster.cluster.tracking_password_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_mlflow_server_refuses_anonymous_and_wrong_password(local_ray_cluster):
    url = local_ray_cluster.cluster.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    user = local_ray_cluster.cluster.tracking_username
    assert http_status("GET", url) == 401
    assert http_status("GET", url, {"Authorization": basic_auth_header(user, "not-the-password-at-all")}) == 401
    assert http_status("GET", url, {"Authorization": basic_auth_header(user, local_ray_cluster.tracking_password)}) == 200


def test_mlflow_server_refuses_a_foreign_host_header(local_ray_cluster):
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not reach the API.
    url = local_ray_cluster.cluster.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    auth = basic_auth_header(local_ray_cluster.cluster.tracking_username, local_ray_cluster.tracking_password)
    assert http_status("GET", url, {"Authorization": auth, "Host": "evil.example"}) in (400, 403)


@pytest.mark.parametrize(
    "password,message",
    [(LEGACY_DEFAULT_ADMIN_PASSWORD, "old default admin password"), ("short", "at least 12"), ("", "not set")],
)
def test_serve_refuses_weak_admin_passwords_before_starting(tmp_path, monkeypatch, password, message):
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(UserError, match=message):
        serve(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), state_dir=tmp_path, password=password)
    assert not (tmp_path / "server.log").exists(), "nothing may start on a refused password"


def test_token_never_printed_or_logged(local_ray_cluster, tmp_path, capsys):
    cluster = local_ray_cluster.cluster
    (tmp_path / "hello.py").write_text("import os\nprint('env has token var:', 'RAY_AUTH_TOKEN' in os.environ)\n")
    submitted = jobs_api.submit("python hello.py", cluster.jobs_address, tmp_path, state_dir=cluster.state_dir)
    assert jobs_api.wait(submitted.job_id, cluster.jobs_address, timeout_s=120, state_dir=cluster.state_dir) == "SUCCEEDED"
    job_log = "".join(jobs_api.logs(submitted.job_id, cluster.jobs_address, state_dir=cluster.state_dir))
    printed = capsys.readouterr()
    token, password = local_ray_cluster.token, local_ray_cluster.tracking_password
    for text, where in [(local_ray_cluster.up_output, "up() output"), (printed.out + printed.err, "submit output"), (job_log, "job log")]:
        assert token not in text, where
        assert password not in text, where
    log_files = [p for root in (Path(cluster.state_dir) / "logs", Path(cluster.ray_temp_root)) for p in root.rglob("*") if p.is_file() and not p.is_socket()]
    assert len(log_files) > 10, "Ray's session logs should be there to be searched"
    leaking = [str(p) for p in log_files if token.encode() in p.read_bytes()]
    assert leaking == []
