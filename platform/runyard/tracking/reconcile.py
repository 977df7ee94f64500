"""Nothing stays RUNNING forever: runs whose driver is gone are marked FAILED.

Every run carries the host, pid and start time of the driver writing it, and, when that
driver is a job submitted to a cluster, the job's submission id. A run still RUNNING gets
status FAILED and a `runyard.error` tag saying why when
- its driver was a cluster job and the cluster's Jobs API (asked through `job_state`) says
  that job FAILED or was STOPPED: a driver on another host is judged by its job, with the
  job's own message as the reason;
- otherwise, its driver was on this host and is no longer alive (the pid is gone, or now
  belongs to a process started at another time).
Other runs are left alone: their liveness cannot be seen from here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import psutil
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from runyard.tracking.tags import DRIVER, DRIVER_STARTED, ERROR, RAY_JOB

# submission id -> (its status, its message) as the Jobs API says, or None when unknown there
JobState = Callable[[str], "tuple[str, str] | None"]
ENDED_BADLY = ("FAILED", "STOPPED")


def driver_alive(driver: str, started: str | None) -> bool | None:
    """True/False for a driver on this host; None when it ran elsewhere."""
    host, _, pid_text = driver.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    try:
        process = psutil.Process(int(pid_text))
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def reconcile(client: MlflowClient, experiment_ids: list[str] | None = None,
              job_state: JobState | None = None) -> list[str]:
    """Mark RUNNING runs of dead drivers FAILED; return their run ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    running = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                 max_results=50000)
    marked = []
    for run in running:
        reason = _why_dead(run.data.tags, job_state)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ERROR, reason)
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
        marked.append(run.info.run_id)
    return marked


def _why_dead(tags: dict[str, str], job_state: JobState | None) -> str | None:
    """Why the run's driver is known to be gone, or None when it may be alive."""
    found = f"found by runyard at {time.strftime('%Y-%m-%d %H:%M:%S')}"
    submission = tags.get(RAY_JOB)
    if submission and job_state is not None:
        state = job_state(submission)
        if state is None or state[0] not in ENDED_BADLY:
            return None
        status, message = state
        said = (message.strip().splitlines() or ["no message"])[0][:500]  # not its log tail
        return (f"its driver, cluster job {submission}, is {status}: {said} ({found}); "
                "`runyard resume` continues the job")
    driver = tags.get(DRIVER)
    if driver is None or driver_alive(driver, tags.get(DRIVER_STARTED)) is not False:
        return None
    return f"driver {driver} is gone ({found}); `runyard resume` continues the job"
