"""The shared MLflow tracking server: basic-auth, an explicit host allow-list, SQL backend.

runyard never starts an open tracking server. `serve` runs

    mlflow server --app-name runyard-basic-auth  (MLFLOW_BACKEND_STORE_URI=<sqlite|postgresql>)
                  --artifacts-destination <dir|s3://...> --serve-artifacts
                  --host 127.0.0.1 --port <free port> --allowed-hosts <host:port,...>

with a generated basic_auth.ini (named by MLFLOW_AUTH_CONFIG_PATH) and the admin credentials
taken from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD -- the same variables every MLflow
client reads, so the driver that logs runs and the server that checks them agree by
construction. The password reaches the server through MLFLOW_AUTH_ADMIN_PASSWORD in the
child's environment only: it is never written to disk, put on a command line, or printed.

Refused before anything starts (runyard.errors.UserError, exit code 2):
  * no password, or a password shorter than MLflow's own 12-character minimum;
  * `password1234`, the admin password that MLflow shipped in basic_auth.ini before 3.x
    (GHSA-gq3w-7jj3-x7gr). The installed MLflow rejects it too
    (mlflow/server/auth/__init__.py, _LEGACY_DEFAULT_ADMIN_PASSWORD); runyard checks first so
    the error names the variable to set;
  * a backend that is not SQLite or PostgreSQL (the file store has no auth tables);
  * a non-loopback host without an explicit allow-list of host names (DNS rebinding).
After start, `serve` logs in with the credentials; if an existing auth store already holds the
admin with another password it stops the server and says so, instead of leaving clients to
discover a 401 in the middle of a sweep.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import UserError
from runyard.paths import TRACKING_STATE_DIR
from runyard.processes import start_group, stop_group, tail, write_private

DEFAULT_ADMIN_USERNAME = "admin"
# What MLflow < 3 shipped as admin_password in basic_auth.ini (GHSA-gq3w-7jj3-x7gr).
LEGACY_DEFAULT_ADMIN_PASSWORD = "password1234"
# mlflow.utils.validation._validate_password: "Password must be at least 12 characters."
MIN_PASSWORD_LENGTH = 12
# Authenticated users may read every experiment (the lab compares runs); writes need a grant or
# ownership. Anonymous requests get 401 whatever this says.
DEFAULT_PERMISSION = "READ"

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
SUPPORTED_BACKENDS = ("sqlite:///", "postgresql://", "postgresql+psycopg2://")


@dataclass
class TrackingServer:
    """A running tracking server: where it answers and which process group to stop."""

    uri: str
    pid: int
    log_path: Path
    process: subprocess.Popen | None = None

    def wait(self) -> int:
        """Block until the server exits (the foreground `runyard tracking serve`)."""
        if self.process is None:
            raise RuntimeError("wait() needs the server started by this process")
        return self.process.wait()

    def stop(self, timeout_s: float = 15.0) -> None:
        stop_group(self.pid, timeout_s, leader=self.process)
        if self.process is not None:
            self.process.wait(timeout=timeout_s)


def admin_credentials(username: str | None = None, password: str | None = None) -> tuple[str, str]:
    """The admin (username, password): explicit values, else the MLflow client variables.

    Raises UserError for a missing, short or publicly known password.
    """
    username = username or os.environ.get("MLFLOW_TRACKING_USERNAME") or DEFAULT_ADMIN_USERNAME
    password = password if password is not None else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if not password:
        raise UserError(
            "MLFLOW_TRACKING_PASSWORD: not set. The tracking server needs an admin password and "
            "runyard ships none; export MLFLOW_TRACKING_PASSWORD (at least "
            f"{MIN_PASSWORD_LENGTH} characters), e.g. `export MLFLOW_TRACKING_PASSWORD=$(openssl "
            "rand -hex 16)`, and keep it in your password manager."
        )
    if password == LEGACY_DEFAULT_ADMIN_PASSWORD:
        raise UserError(
            "MLFLOW_TRACKING_PASSWORD: refusing MLflow's old default admin password "
            f"'{LEGACY_DEFAULT_ADMIN_PASSWORD}' (publicly known, GHSA-gq3w-7jj3-x7gr). Set a "
            "random one, e.g. `export MLFLOW_TRACKING_PASSWORD=$(openssl rand -hex 16)`."
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"MLFLOW_TRACKING_PASSWORD: {len(password)} characters; MLflow requires at least "
            f"{MIN_PASSWORD_LENGTH}. Set a longer one, e.g. `$(openssl rand -hex 16)`."
        )
    return username, password


def check_backend_uri(backend_uri: str) -> str:
    """The backend URI to hand MLflow; PostgreSQL goes through psycopg2 explicitly.

    SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; runyard depends on psycopg2-binary.
    """
    if not backend_uri.startswith(SUPPORTED_BACKENDS):
        raise UserError(
            f"--backend: {redacted_uri(backend_uri)!r} is not supported. Use "
            "sqlite:////abs/path/mlflow.db for one machine or "
            "postgresql://USER:PASSWORD@HOST:PORT/DB for a cluster head node."
        )
    if backend_uri.startswith("postgresql://"):
        return "postgresql+psycopg2://" + backend_uri[len("postgresql://"):]
    return backend_uri


def auth_db_uri_for(backend_uri: str) -> str:
    """Where the basic-auth users live: beside a SQLite store, inside a PostgreSQL one.

    MLflow's auth tables carry their own alembic version table (alembic_version_auth), so they
    share a PostgreSQL database with the tracking tables without clashing.
    """
    if backend_uri.startswith("sqlite:///"):
        path = Path(backend_uri[len("sqlite:///"):])
        return f"sqlite:///{path.with_name(path.stem + '-auth.db')}"
    return backend_uri


def write_auth_config(path: Path, auth_db_uri: str, username: str) -> Path:
    """Write the basic_auth.ini that MLFLOW_AUTH_CONFIG_PATH names (0600: it holds the DB URI)."""
    text = (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {auth_db_uri}\n"
        f"admin_username = {username}\n"
        "# admin_password comes from MLFLOW_AUTH_ADMIN_PASSWORD in the server's environment.\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return write_private(path, text)


def persistent_secret(path: Path) -> str:
    """A random secret kept 0600 in `path`, made on first use (CSRF key of the auth app's forms).

    Kept across restarts so a browser's form tokens stay valid when the server restarts.
    """
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def serve(
    backend_uri: str,
    artifacts: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    state_dir: str | Path = TRACKING_STATE_DIR,
    username: str | None = None,
    password: str | None = None,
    allowed_hosts: list[str] | tuple[str, ...] = (),
    workers: int = 1,
    startup_timeout_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> TrackingServer:
    """Start the basic-auth MLflow server in the background and wait until a login works.

    backend_uri: sqlite:////abs/mlflow.db or postgresql://user:pw@host:port/db.
    artifacts: a directory or an object-store URI (s3://bucket/prefix); the server proxies
        artifact traffic, so clients need no bucket credentials.
    port: 0 picks a free one. allowed_hosts: extra `host[:port]` names clients use to reach
        the server (required when host is not loopback).
    extra_env: added to the server's environment (the local cluster's ownership marker).
    Returns a TrackingServer; `.stop()` ends it, `.wait()` blocks on it.
    """
    username, password = admin_credentials(username, password)
    backend_uri = check_backend_uri(backend_uri)
    if host not in LOOPBACK_HOSTS and not allowed_hosts:
        raise UserError(
            f"--host {host}: a server reachable beyond this machine needs --allowed-hosts "
            "naming the host names clients use (e.g. head-node.internal:5000); runyard does not "
            "accept every Host header."
        )
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if not artifacts.startswith(("s3://", "gs://", "wasbs://", "file://")):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        artifacts = str(Path(artifacts).resolve())
    port = port or free_port(host)

    config_path = write_auth_config(state_dir / "basic_auth.ini", auth_db_uri_for(backend_uri), username)
    hosts = [f"{h}:{port}" for h in ("127.0.0.1", "localhost")] + list(allowed_hosts)
    command = [
        sys.executable, "-m", "mlflow", "server",
        # MLflow's basic-auth app, its page opening experiments on their runs (ui_app.py)
        "--app-name", "runyard-basic-auth",
        "--artifacts-destination", artifacts,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--allowed-hosts", ",".join(hosts),
    ]
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_URI")
    }
    env.update(
        # Through the environment, not argv: a PostgreSQL URI carries a password, and every
        # local user can read a command line.
        MLFLOW_BACKEND_STORE_URI=backend_uri,
        MLFLOW_AUTH_CONFIG_PATH=str(config_path),
        MLFLOW_AUTH_ADMIN_USERNAME=username,
        MLFLOW_AUTH_ADMIN_PASSWORD=password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
        or persistent_secret(state_dir / "flask_secret_key"),
        MLFLOW_DISABLE_TELEMETRY="true",
        # The GenAI job runner (huey consumers) is not used by runyard: 8 idle processes less.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        DO_NOT_TRACK="true",
        **(extra_env or {}),
    )
    log_path = state_dir / "server.log"
    with open(log_path, "ab") as log:
        # A session of its own: stop() ends the server and its uvicorn workers as one group.
        process = start_group(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, cwd=state_dir)
    uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    server = TrackingServer(uri=uri, pid=process.pid, log_path=log_path, process=process)
    try:
        wait_until_healthy(server, startup_timeout_s)
        if not credentials_accepted(uri, username, password):
            raise UserError(
                f"MLFLOW_TRACKING_PASSWORD: the auth store ({redacted_uri(auth_db_uri_for(backend_uri))}) "
                f"already has admin user '{username}' with a different password. Use that "
                "password, or rotate it with MLflow's update-password API."
            )
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_healthy(server: TrackingServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(
                f"the MLflow server exited with code {server.process.returncode} during start; "
                f"see {server.log_path}:\n{tail(server.log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server did not answer within {timeout_s:.0f} s; see {server.log_path}")


def credentials_accepted(uri: str, username: str, password: str) -> bool:
    """Ask the auth app about the admin user; 200 means the credentials are good."""
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/users/get?username={username}",
        headers={"Authorization": basic_auth_header(username, password)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            return False
        raise


def basic_auth_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def redacted_uri(uri: str) -> str:
    from runyard.tracking.redact import redact_value

    return redact_value(uri)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("localhost", "::1") else "127.0.0.1", 0))
        return s.getsockname()[1]
