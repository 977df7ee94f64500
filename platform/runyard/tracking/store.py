"""Where runs are kept, and how runyard's runs are laid out in MLflow.

Embedded default: a SQLite store and an artifact folder under `.runyard/` in the working
directory. `--tracking-uri` or MLFLOW_TRACKING_URI points elsewhere (an MLflow server).

Layout: a plain job is one run; a sweep is a parent run with one nested child run per trial.
Tags tie every run to runyard's ids, so later commands (ls, resume) find them again.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.paths import project_storage
from runyard.tracking.redact import redact
from runyard.tracking.tags import EXPERIMENT_KIND, JOB_ID, KIND, MODEL_TRAINING
from runyard.tracking.writer import RunRef, TrackingWriter

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def quiet_mlflow() -> None:
    """MLflow and alembic log store migrations at INFO; a researcher does not need them. Nor
    the two "View run ... at: URL" lines MLflow prints for every run that ends on a server
    (a sweep's job log would carry one pair per trial): the job's outcome links its run."""
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def resolve_tracking_uri(explicit: str | None = None, workdir: Path | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = project_storage(workdir or Path.cwd())
    return f"sqlite:///{root / 'mlflow.db'}"


def refused_for_credentials(error: BaseException, uri: str | None) -> str | None:
    """What to tell a researcher whose tracking server refused a request for want of (valid)
    credentials (HTTP 401) or of permission (403); None for any other error."""
    from mlflow.exceptions import MlflowException

    if not isinstance(error, MlflowException):
        return None
    code = re.search(r"error code (401|403)\b", str(error.message))
    if code is None:
        return None
    server = uri or os.environ.get("MLFLOW_TRACKING_URI") or "the tracking server"
    if code.group(1) == "403":
        return (f"{server} refused the request (HTTP 403): the account in "
                "MLFLOW_TRACKING_USERNAME may not read or write this experiment; ask its admin "
                "for permission, or use an account that has it")
    given = "rejected the credentials in" if os.environ.get("MLFLOW_TRACKING_USERNAME") \
        else "needs credentials: set"
    return (f"{server} {given} MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (HTTP 401; "
            "an account on that server; for a cluster runyard started, its admin is "
            "MLFLOW_TRACKING_USERNAME=admin with the password in the cluster's state folder, "
            ".runyard/cluster/tracking_password)")


def is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:")


def artifact_root(uri: str) -> str | None:
    """For the embedded store, artifacts go next to the database; a server decides its own."""
    if not is_embedded(uri):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").as_uri()


def client_for(uri: str) -> MlflowClient:
    from mlflow.tracking import MlflowClient

    quiet_mlflow()
    if is_embedded(uri):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if new; either way marked as a model-training one."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_root(uri),
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING})
    if EXPERIMENT_KIND not in experiment.tags:  # made by an earlier runyard, or by hand
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return experiment.experiment_id


def job_run(client: MlflowClient, experiment_ids: list[str], job_id: str) -> Run | None:
    """The run of runyard job `job_id` (a plain job's run, or a sweep's parent), if made:
    found by its tags, without reading the sweep's trial runs."""
    runs = client.search_runs(experiment_ids, max_results=10,
                              filter_string=f"tags.`{JOB_ID}` = '{job_id}' and tags.`{KIND}` != 'trial'")
    return next((run for run in runs if run.data.tags.get(KIND) in ("run", "sweep")), None)


class JobTracking:
    """The MLflow side of one job: its experiment, its writer, and run naming conventions.

    The store is opened on the writer's thread (tracking.writer): making this costs the
    caller nothing, and `client` and `experiment_id` wait until the store is open (or raise
    why it could not be). With `open_later`, it opens when first needed or `open()`ed."""

    def __init__(self, uri: str, experiment: str, open_later: bool = False):
        self.uri = uri
        self._experiment_id = ""

        def connect() -> MlflowClient:
            client = client_for(uri)
            self._experiment_id = experiment_id(client, experiment, uri)
            return client

        self.writer = TrackingWriter(connect, open_later=open_later)

    def open(self) -> None:
        self.writer.open()

    @property
    def client(self) -> MlflowClient:
        self.writer.open()
        return self.writer.connected.result()

    @property
    def experiment_id(self) -> str:
        self.client  # noqa: B018 — the id is known once the store is open
        return self._experiment_id

    def failed_to_open(self, wait: bool = False) -> BaseException | None:
        """Why the store could not be opened; None if it was, or (unless `wait`) while that
        is not known yet."""
        connected = self.writer.connected
        if wait:
            self.writer.open()
            return connected.exception()
        return connected.exception() if connected.done() else None

    def start_run(self, name: str, tags: dict[str, str], params: dict[str, Any],
                  parent: RunRef | None = None) -> RunRef:
        params = redact({k: _param_text(v) for k, v in params.items()})
        return self.writer.create_run(lambda: self.experiment_id, name, redact(tags), params,
                                      parent)

    def close(self) -> None:
        self.writer.close()


def _param_text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'config': {'lr': 0.1}} -> {'config.lr': 0.1}; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
