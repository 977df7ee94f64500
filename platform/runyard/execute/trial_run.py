"""The trial's MLflow run, for a program that logs to MLflow itself (`reports: mlflow`).

The driver makes each trial's run (execute/tracking_callback.py) when Tune starts the trial;
the command workload starts its program at the trial's first step, by which time the run is
being made. This finds it, hands the program the variables that make `mlflow.start_run()`
continue it instead of making a new one, and reads the metrics the program logs back, so
that they drive the stop conditions, the schedulers and the sweep without being logged twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from runyard.execute.payload import TrialPayload, TrialTracking
from runyard.tracking.store import client_for
from runyard.tracking.tags import JOB_ID, PARENT, TRIAL_ID

FIND_TIMEOUT_S = 120.0  # the driver makes the run when Tune starts the trial
# What the program's MLflow client needs besides the run: a server's credentials, passed on
# from the trial's own environment where they are set.
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                        "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS",
                        "MLFLOW_TRACKING_SERVER_CERT_PATH")


@dataclass
class TrialRunLink:
    client: MlflowClient
    uri: str
    run_id: str
    experiment_id: str
    seen: set[tuple[str, int, int, float]] = field(default_factory=set)

    @classmethod
    def find(cls, trial: TrialPayload) -> TrialRunLink:
        if trial.tracking is None:
            raise RuntimeError("this trial was started without a tracking run to report to")
        tracking = trial.tracking
        client = client_for(tracking.uri)
        if not tracking.job_run_id:  # a new job: its runs are being made as the trial starts
            run_id = _trial_run(client, tracking, trial.trial_id)
        elif tracking.sweep:
            run_id = _child_run(client, tracking.job_run_id, trial.trial_id)
        else:
            run_id = tracking.job_run_id
        run = client.get_run(run_id)
        return cls(client, tracking.uri, run_id, run.info.experiment_id)

    def environment(self) -> dict[str, str]:
        credentials = {name: os.environ[name] for name in CREDENTIAL_VARIABLES
                       if os.environ.get(name)}
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_RUN_ID": self.run_id,
                "MLFLOW_EXPERIMENT_ID": self.experiment_id, **credentials}

    def read(self, names: Collection[str], since_ms: int) -> list[tuple[int, str, float]]:
        points = []
        for name in names:
            for metric in self.client.get_metric_history(self.run_id, name):
                key = (name, metric.step, metric.timestamp, metric.value)
                if metric.timestamp >= since_ms and key not in self.seen:
                    self.seen.add(key)
                    points.append((int(metric.step), name, float(metric.value)))
        return points


def _child_run(client: MlflowClient, parent_id: str, trial_id: str) -> str:
    """The run the driver made for this trial under the sweep's parent, once it exists."""
    parent = client.get_run(parent_id)
    query = f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'"
    return _made_run(client, lambda: parent.info.experiment_id, query,
                     f"trial {trial_id} (parent run {parent_id})")


def _trial_run(client: MlflowClient, tracking: TrialTracking, trial_id: str) -> str:
    """The trial's run in a new job: a plain job's run, or a sweep's child (the parent has
    no trial id), once the driver has made the experiment and the run."""
    def experiment_id() -> str | None:
        experiment = client.get_experiment_by_name(tracking.experiment)
        return experiment.experiment_id if experiment is not None else None

    query = f"tags.`{JOB_ID}` = '{tracking.job_id}' and tags.`{TRIAL_ID}` = '{trial_id}'"
    return _made_run(client, experiment_id, query, f"trial {trial_id} of job {tracking.job_id}")


def _made_run(client: MlflowClient, experiment_id: Callable[[], str | None], query: str,
              what: str) -> str:
    deadline = time.monotonic() + FIND_TIMEOUT_S
    while True:
        experiment = experiment_id()
        runs = (client.search_runs([experiment], filter_string=query, max_results=1)
                if experiment is not None else [])
        if runs:
            return runs[0].info.run_id
        if time.monotonic() > deadline:
            raise RuntimeError(f"the driver made no MLflow run for {what} within "
                               f"{FIND_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
