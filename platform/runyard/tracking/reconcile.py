"""Nothing stays RUNNING forever: runs whose driver process is gone are marked FAILED.

Every run carries the host, pid and start time of the driver writing it. A run still
RUNNING whose driver was on this host and is no longer alive (the pid is gone, or now
belongs to a process started at another time) gets status FAILED and a `runyard.error`
tag saying why. Runs driven from other hosts are left alone: their liveness cannot be seen
from here.
"""

from __future__ import annotations

import socket
import time

import psutil
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from runyard.tracking.tags import DRIVER, DRIVER_STARTED, ERROR


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


def reconcile(client: MlflowClient, experiment_ids: list[str] | None = None) -> list[str]:
    """Mark RUNNING runs of dead local drivers FAILED; return their run ids."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    running = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'",
                                 max_results=50000)
    marked = []
    for run in running:
        driver = run.data.tags.get(DRIVER)
        if driver is None or driver_alive(driver, run.data.tags.get(DRIVER_STARTED)) is not False:
            continue
        reason = (f"driver {driver} is gone (found by runyard at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}); `runyard resume` continues the job")
        client.set_tag(run.info.run_id, ERROR, reason)
        client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FAILED))
        marked.append(run.info.run_id)
    return marked
