"""Submit and manage jobs on a secured Ray cluster through the Ray Jobs API.

Every request carries `Authorization: Bearer <token>`. The token is read, never printed or
logged, from the first of:
  1. RAY_AUTH_TOKEN (the token itself),
  2. RAY_AUTH_TOKEN_PATH (a file holding it),
  3. the local cluster's token, when the address is the one `runyard cluster local up` recorded,
  4. ~/.ray/auth_token (where `ray get-auth-token --generate` writes it).
The address is the `address` argument, else RAY_JOBS_ADDRESS / RAY_ADDRESS when it is an
http(s) URL, else the local cluster recorded in .runyard/cluster/state.json. For a cloud
cluster, forward the dashboard first (`ray dashboard cluster.yaml`) and use
http://127.0.0.1:8265.

The project travels as the job's working_dir, minus what a job never needs and what would
blow Ray's upload limit (launch/project_files.py: runyard's state, Python environments,
training output, VCS and caches, and every file larger than `max_file_mb`, reported back,
never silently dropped); a project still over `max_upload_mb` is refused before it ships.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from runyard.errors import UserError
from runyard.launch.project_files import (DEFAULT_MAX_FILE_MB, DEFAULT_MAX_UPLOAD_MB, Shipment,
                                          check_size, shipment)
from runyard.paths import CLUSTER_STATE_DIR
from runyard.ray_compat import upload_py_modules

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class Submitted:
    job_id: str
    address: str
    shipped: Shipment  # what of the project travelled with the job


def resolve_address(address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> str:
    """The Jobs API URL to talk to (see the module docstring for the order)."""
    if address:
        candidate = address
    else:
        candidate = os.environ.get("RAY_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS") or ""
        if not candidate.startswith(("http://", "https://")):
            candidate = _local_cluster_field(state_dir, "jobs_address") or ""
    if not candidate:
        raise UserError(
            "--address: no Ray cluster given. Pass --address http://HOST:8265, export "
            "RAY_ADDRESS=http://..., or start one here with `runyard cluster local up`."
        )
    if not candidate.startswith(("http://", "https://")):
        raise UserError(
            f"--address: {candidate!r} is not a Jobs API URL; expected http://HOST:PORT (the "
            "dashboard port, 8265 on a cloud head node reached through `ray dashboard`)."
        )
    return candidate.rstrip("/")


def read_token(address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> str:
    """The Ray auth token for `address` (module docstring lists where it is looked for)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    candidates = []
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        candidates.append(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser())
    if address and address.rstrip("/") == _local_cluster_field(state_dir, "jobs_address"):
        candidates.append(Path(_local_cluster_field(state_dir, "token_path")))
    candidates.append(Path.home() / ".ray" / "auth_token")
    for path in candidates:
        if path.is_file():
            token = path.read_text().strip()
            if token:
                return token
    raise UserError(
        "RAY_AUTH_TOKEN_PATH: no Ray auth token found (looked in RAY_AUTH_TOKEN, "
        f"{', '.join(str(p) for p in candidates)}). Copy the cluster's token (on the head node: "
        "`ray get-auth-token`) into ~/.ray/auth_token with mode 0600, or export RAY_AUTH_TOKEN_PATH."
    )


def client(address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR):
    """An authenticated ray.job_submission.JobSubmissionClient."""
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address, state_dir)
    token = read_token(address, state_dir)
    with api_errors(address):
        return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})


@contextmanager
def api_errors(address: str, job_id: str | None = None):
    """Turn the SDK's errors into UserErrors that say what to fix (never echoing the token)."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as error:
        rejected = "invalid" in str(error) or "Forbidden" in str(error)
        raise UserError(
            f"RAY_AUTH_TOKEN_PATH: {address} {'rejected the Ray auth token' if rejected else 'needs a Ray auth token'}; "
            "use the token of that cluster (on its head node: `ray get-auth-token`)."
        ) from None
    except ConnectionError as error:
        raise UserError(f"--address: cannot reach the Ray Jobs API at {address}: {_first_line(error)}") from None
    except RuntimeError as error:
        if job_id is not None and "does not exist" in str(error):
            raise UserError(f"JOB: {job_id!r} is not known to {address}; list jobs with `runyard status`.") from None
        raise


def submit(
    entrypoint: str,
    address: str | None = None,
    working_dir: str | Path = ".",
    env_vars: Mapping[str, str] | None = None,
    *,
    excludes: tuple[str, ...] = (),
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    entrypoint_num_cpus: float | None = None,
    entrypoint_resources: Mapping[str, float] | None = None,
    submission_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    py_modules: tuple[str | Path, ...] = (),
    state_dir: str | Path = CLUSTER_STATE_DIR,
) -> Submitted:
    """Ship `working_dir` and run `entrypoint` (a shell command) on the cluster's head node.

    env_vars reach the driver's environment; the cluster's own tracking settings
    (MLFLOW_TRACKING_URI and credentials) are already in the nodes' environment, so pass
    secrets here only if the cluster does not provide them. py_modules (package folders)
    travel too and come first on the import path of the driver and of every task and actor
    of the job, on every node.
    Returns the job id, the address and what of the project shipped.
    """
    if not entrypoint or not entrypoint.strip():
        raise UserError("entrypoint: empty; give the command the job runs, e.g. 'runyard run jobs/x.yaml'.")
    working_dir = Path(working_dir).resolve()
    if not working_dir.is_dir():
        raise UserError(f"--working-dir: {working_dir} is not a directory.")
    shipped = shipment(working_dir, excludes, max_file_mb)
    check_size(shipped, max_upload_mb)
    runtime_env = {"working_dir": str(working_dir), "excludes": [*shipped.excludes, *excludes]}
    if env_vars:
        runtime_env["env_vars"] = {str(k): str(v) for k, v in env_vars.items()}
    jobs = client(address, state_dir)
    with api_errors(jobs.get_address()), _quiet_packaging():
        if py_modules:
            runtime_env["py_modules"] = _uploaded_packages(jobs, py_modules)
        job_id = jobs.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=submission_id,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_resources=dict(entrypoint_resources) if entrypoint_resources else None,
            metadata=dict(metadata) if metadata else None,
        )
    return Submitted(job_id=job_id, address=jobs.get_address(), shipped=shipped)


# What a shipped package (py_modules) leaves out; the project's excludes are not for it.
PACKAGE_EXCLUDES = ("__pycache__", "*.pyc")


def _uploaded_packages(jobs: JobSubmissionClient, packages: tuple[str | Path, ...]) -> list[str]:
    """The package folders uploaded on their own, as the URIs a runtime env takes.

    Ray packs py_modules with the working dir's `excludes`, each matched relative to the
    folder being packed, so the project's `/data` also dropped runyard's own `data` package
    (every job on prepared shards failed on the cluster with "No module named
    'runyard.data'"). Ray has no public way to give packages excludes of their own
    (runyard.ray_compat.upload_py_modules)."""
    packed = {"py_modules": [str(Path(package).resolve()) for package in packages],
              "excludes": list(PACKAGE_EXCLUDES)}
    upload_py_modules(jobs, packed)
    return packed["py_modules"]


def status(job_id: str, address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR):
    """The job's JobDetails (status, message, start/end times, entrypoint, runtime_env...)."""
    jobs = client(address, state_dir)
    with api_errors(jobs.get_address(), job_id):
        return jobs.get_job_info(job_id)


def logs(
    job_id: str, address: str | None = None, follow: bool = False, state_dir: str | Path = CLUSTER_STATE_DIR
) -> Iterator[str]:
    """The job's driver output: everything so far, or (follow=True) streamed until it ends."""
    jobs = client(address, state_dir)
    if not follow:
        with api_errors(jobs.get_address(), job_id):
            yield jobs.get_job_logs(job_id)
        return
    with api_errors(jobs.get_address(), job_id):
        jobs.get_job_status(job_id)  # an unknown id fails here, before the stream opens
    stream = jobs.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()


def stop(job_id: str, address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> bool:
    """Ask the job to stop; False when it had already finished."""
    jobs = client(address, state_dir)
    with api_errors(jobs.get_address(), job_id):
        return jobs.stop_job(job_id)


def list_jobs(address: str | None = None, state_dir: str | Path = CLUSTER_STATE_DIR) -> list:
    """Every job the cluster knows, oldest first."""
    api = client(address, state_dir)
    with api_errors(api.get_address()):
        jobs = api.list_jobs()
    return sorted(jobs, key=lambda job: job.start_time or 0)


def wait(
    job_id: str,
    address: str | None = None,
    timeout_s: float = 300.0,
    poll_s: float = 1.0,
    state_dir: str | Path = CLUSTER_STATE_DIR,
) -> str:
    """Block until the job reaches SUCCEEDED, FAILED or STOPPED; return that state."""
    jobs = client(address, state_dir)
    deadline = time.monotonic() + timeout_s
    while True:
        with api_errors(jobs.get_address(), job_id):
            state = str(jobs.get_job_status(job_id).value)
        if state in TERMINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


@contextmanager
def _quiet_packaging() -> Iterator[None]:
    """Ray's client logs every package it zips and uploads at INFO ("Uploading package
    gcs://..."); submit says what it ships in one line instead."""
    names = ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _local_cluster_field(state_dir: str | Path, name: str) -> str | None:
    import json

    path = Path(state_dir) / "state.json"
    try:
        return json.loads(path.read_text()).get(name) or None
    except (OSError, ValueError):
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
