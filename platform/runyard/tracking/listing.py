"""Read runyard's jobs back from MLflow, for `runyard ls`.

An embedded store in which no run is RUNNING (so none can have lost its driver) is read
with SQLite alone (tracking/sqlite_view.py): no MLflow import, no store to open. Any other
store, or one with a run still RUNNING, goes through MLflow's client, which also marks the
runs of dead drivers FAILED first (tracking/reconcile.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runyard.tracking import sqlite_view
from runyard.tracking.store import client_for, is_embedded, job_run
from runyard.tracking.tags import JOB_ID, KIND, PARENT, TRIAL_COUNTS


@dataclass(frozen=True)
class JobRow:
    started: str
    experiment: str
    job_id: str
    kind: str
    status: str
    trials: str
    best: str
    duration: str
    run_id: str


def recent_jobs(uri: str, experiment: str | None, limit: int) -> list[JobRow]:
    if is_embedded(uri):
        database = Path(uri.removeprefix("sqlite:///"))
        if not database.exists():
            return []
        stored = sqlite_view.ended_top_runs(database, experiment, limit)
        # A sweep from a runyard that did not tag its trial count needs its children counted.
        if stored is not None and all(run.tags.get(KIND) != "sweep" or TRIAL_COUNTS in run.tags
                                      for run in stored):
            return [_job_row(run.run_id, run.name, run.status, run.start_time, run.end_time,
                             run.experiment, run.tags, run.metrics, None)
                    for run in stored if PARENT not in run.tags]
    return _recent_jobs_from_mlflow(uri, experiment, limit)


def _recent_jobs_from_mlflow(uri: str, experiment: str | None, limit: int) -> list[JobRow]:
    from mlflow.entities import ViewType

    from runyard.tracking.reconcile import reconcile

    client = client_for(uri)
    reconcile(client)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()
                   if experiment is None or e.name == experiment}
    if not experiments:
        return []
    runs = client.search_runs(list(experiments), filter_string=f"tags.`{KIND}` != 'trial'",
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=limit,
                              order_by=["attributes.start_time DESC"])
    return [_row(client, run, experiments) for run in runs if PARENT not in run.data.tags]


def job_runs(uri: str, job_ids: list[str]) -> dict[str, JobRow]:
    """The MLflow run of each runyard job id (a plain job's run, or a sweep's parent)."""
    client = client_for(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    found = {}
    for job_id in job_ids if experiments else []:
        run = job_run(client, list(experiments), job_id)
        if run is not None:
            found[job_id] = _row(client, run, experiments)
    return found


def _row(client, run, experiments: dict[str, str]) -> JobRow:
    """A run as MLflow's client returns it; a running sweep's children are counted now."""
    children = None
    if run.data.tags.get(KIND) == "sweep" and (run.info.status == "RUNNING"
                                               or TRIAL_COUNTS not in run.data.tags):
        children = [c.info.status for c in client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{run.info.run_id}'",
            max_results=10000)]
    return _job_row(run.info.run_id, run.info.run_name or "", run.info.status,
                    run.info.start_time, run.info.end_time,
                    experiments.get(run.info.experiment_id, "?"), run.data.tags,
                    run.data.metrics, children)


def _job_row(run_id: str, name: str, status: str, start_ms: int, end_ms: int | None,
             experiment: str, tags: dict[str, str], metrics: dict[str, float],
             children: list[str] | None) -> JobRow:
    """`children`: the statuses of a sweep's trial runs, when its tags do not count them
    (a sweep still running, or one from an older runyard)."""
    kind = tags.get(KIND, "-")
    trials = "1"
    if kind == "sweep" and children is None:
        trials = tags[TRIAL_COUNTS]  # as its driver ended: counting thousands of runs takes seconds
    elif kind == "sweep":
        trials = f"{sum(status == 'FINISHED' for status in children)}/{len(children)}"
    best = next((f"{k.removeprefix('best_')}={v:.4g}" for k, v in metrics.items()
                 if k.startswith("best_")), "")
    end = end_ms or int(time.time() * 1000)
    return JobRow(
        started=time.strftime("%Y-%m-%d %H:%M", time.localtime(start_ms / 1000)),
        experiment=experiment, job_id=tags.get(JOB_ID, name), kind=kind, status=status,
        trials=trials, best=best, duration=f"{(end - start_ms) / 1000:.0f}s", run_id=run_id,
    )


def render_jobs(console: Console, rows: list[JobRow], uri: str) -> None:
    """The jobs as a table on `console`, which the caller sizes (cli.output: piped, as wide
    as the longest row, so that no id is cut)."""
    if not rows:
        console.print(f"no runs yet in {uri}; start one with: runyard run jobs/digits_linear.yaml",
                      highlight=False)
        return
    table = Table(title=f"recent jobs in {uri}", title_justify="left", box=None,
                  header_style="bold")
    for column in ("started", "experiment", "job id", "kind", "status", "trials", "best",
                   "duration", "MLflow run id"):
        table.add_column(column, no_wrap=True)
    colors = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan"}
    for row in rows:
        status = f"[{colors.get(row.status, 'white')}]{row.status}[/]"
        table.add_row(row.started, row.experiment, row.job_id, row.kind, status, row.trials,
                      row.best, row.duration, row.run_id)
    console.print(table)
