"""The embedded MLflow store read with SQLite alone, for `runyard ls`: the one module that
knows MLflow's tables.

Importing MLflow and opening its store take ~2 s, more than listing a project's jobs should
cost in all. The embedded store is a SQLite file whose tables MLflow's own migrations
define, so a listing can read them directly, read-only. That layout is no public API of
MLflow: it is trusted only at the schema revisions it was checked against
(`CHECKED_REVISIONS`, MLflow's alembic head), and any other revision, or a store that
cannot be read, answers None, which sends the caller to MLflow's client.
tests/test_listing.py holds this reading against the client's on a real store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from runyard.tracking.tags import KIND

# MLflow 3.18's schema head (`alembic_version.version_num` of a store it made or upgraded).
CHECKED_REVISIONS = frozenset({"f4a9b2c7d1e6"})


@dataclass(frozen=True)
class StoredRun:
    """What `runyard ls` shows of a run, as MLflow's client would return it."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch
    end_time: int | None
    experiment: str
    tags: dict[str, str]
    metrics: dict[str, float]  # each metric's latest value


@contextmanager
def _readonly(database: Path) -> Iterator[sqlite3.Connection | None]:
    """The store opened read-only, or None when it cannot be read at a known revision."""
    try:
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=5.0)
    except sqlite3.Error:
        yield None
        return
    with closing(connection):
        try:
            (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except (sqlite3.Error, TypeError):
            revision = None
        yield connection if revision in CHECKED_REVISIONS else None


def ended_top_runs(database: Path, experiment: str | None, limit: int
                   ) -> list[StoredRun] | None:
    """The `limit` newest active runs with a `runyard.kind` tag other than "trial" (jobs'
    runs and sweeps' parents), newest first, as `MlflowClient.search_runs` would list them
    with that filter; None when the store cannot be read here, or while any run in it is
    RUNNING (whose driver may be gone: only MLflow's client can mark it, see reconcile)."""
    with _readonly(database) as connection:
        if connection is None:
            return None
        try:
            return _ended_top_runs(connection, experiment, limit)
        except sqlite3.Error:
            return None


def _ended_top_runs(connection: sqlite3.Connection, experiment: str | None, limit: int
                    ) -> list[StoredRun] | None:
    running = connection.execute(
        "SELECT 1 FROM runs WHERE status = 'RUNNING' AND lifecycle_stage = 'active' LIMIT 1")
    if running.fetchone() is not None:
        return None
    # The client's `tags.k != 'v'` matches runs that have tag k with another value.
    query = ("SELECT r.run_uuid, r.name, r.status, r.start_time, r.end_time, e.name "
             "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
             "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value != 'trial' "
             "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'")
    arguments: list[object] = [KIND]
    if experiment is not None:
        query += " AND e.name = ?"
        arguments.append(experiment)
    query += " ORDER BY r.start_time DESC, r.run_uuid LIMIT ?"
    arguments.append(limit)
    runs = []
    for run_id, name, status, start, end, experiment_name in connection.execute(query, arguments):
        tags = dict(connection.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        metrics = {key: float("nan") if is_nan else float(value) for key, value, is_nan in
                   connection.execute("SELECT key, value, is_nan FROM latest_metrics "
                                      "WHERE run_uuid = ? ORDER BY key", (run_id,))}
        runs.append(StoredRun(run_id, name or "", status, start, end, experiment_name, tags,
                              metrics))
    return runs

