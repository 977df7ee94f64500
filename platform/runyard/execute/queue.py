"""A queue of scheduled sweeps, persisted in SQLite (`.runyard/queue.db`).

`runyard queue run` drains it: the highest priority entry whose `--after` job has finished
runs next, each as its own `runyard run` process (a crashing sweep cannot take the queue
down with it), one at a time on the machine or cluster it was given. Every entry gets its
job id when it is queued, so a queue runner that was killed finds, on restart, which job
each entry became: a job that was mid-run is resumed, not started again.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from runyard.errors import UserError
from runyard.execute.ledger import Ledger

QUEUED, RUNNING, DONE, FAILED, BLOCKED = "queued", "running", "done", "failed", "blocked"

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spec TEXT NOT NULL,
    overrides TEXT NOT NULL,
    priority INTEGER NOT NULL,
    after TEXT,
    job_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    pid INTEGER,
    added REAL NOT NULL,
    started REAL,
    finished REAL,
    exit_code INTEGER
)
"""


@dataclass(frozen=True)
class Entry:
    id: int
    spec: str
    overrides: list[str]
    priority: int
    after: str | None
    job_id: str
    status: str
    pid: int | None
    added: float
    started: float | None
    finished: float | None
    exit_code: int | None


class SweepQueue:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        path = self.workdir / ".runyard" / "queue.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute(SCHEMA)

    def add(self, spec: Path, overrides: list[str], priority: int, after: str | None,
            job_id: str) -> Entry:
        known = {e.job_id for e in self.entries()}
        if after and after not in known and not (Ledger.folder(self.workdir) / f"{after}.json").exists():
            raise UserError(f"--after {after}: no such job or queued sweep (`runyard queue ls`)")
        if job_id in known:
            raise UserError(f"a queued sweep already has id {job_id}")
        cursor = self.db.execute(
            "INSERT INTO entries (spec, overrides, priority, after, job_id, status, added) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (str(Path(spec).resolve()), json.dumps(overrides), priority, after, job_id, QUEUED,
             time.time()))
        return self.get(cursor.lastrowid)

    def get(self, entry_id: int) -> Entry:
        row = self.db.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise UserError(f"no queue entry {entry_id} (`runyard queue ls`)")
        return _entry(row)

    def entries(self) -> list[Entry]:
        rows = self.db.execute("SELECT * FROM entries ORDER BY id").fetchall()
        return [_entry(row) for row in rows]

    def remove(self, entry_id: int) -> None:
        entry = self.get(entry_id)
        if entry.status == RUNNING:
            raise UserError(f"entry {entry_id} ({entry.job_id}) is running; stop its runner first")
        self.db.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    def _set(self, entry_id: int, **fields: object) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        self.db.execute(f"UPDATE entries SET {columns} WHERE id = ?", (*fields.values(), entry_id))

    def next_ready(self) -> Entry | None:
        """The entry to run next: highest priority first, then oldest; its `after` done."""
        by_job = {e.job_id: e for e in self.entries()}
        candidates = sorted((e for e in by_job.values() if e.status == QUEUED),
                            key=lambda e: (-e.priority, e.id))
        for entry in candidates:
            if entry.after is None:
                return entry
            before = by_job.get(entry.after)
            state = before.status if before else _job_state(self.workdir, entry.after)
            if state == DONE:
                return entry
            if state in (FAILED, BLOCKED):
                self._set(entry.id, status=BLOCKED)
        return None

    def recover(self, wait: Callable[[int], None]) -> None:
        """Entries left RUNNING by a runner that died go back in the queue, after any job
        process it left behind has ended; running them again resumes their job, which
        finishes at once if nothing was left to do."""
        for entry in self.entries():
            if entry.status != RUNNING:
                continue
            if entry.pid and psutil.pid_exists(entry.pid):
                wait(entry.pid)
            self._set(entry.id, status=QUEUED, pid=None)

    def run(self, runyard: list[str], extra_args: list[str], say: Callable[[str], None]) -> int:
        """Drain the queue; returns how many entries failed."""
        self.recover(lambda pid: _wait_for(pid, say))
        failures = 0
        while (entry := self.next_ready()) is not None:
            resuming = (Ledger.folder(self.workdir) / f"{entry.job_id}.json").exists()
            if resuming:
                command = [*runyard, "resume", entry.job_id, *extra_args]
            else:
                sets = [item for o in entry.overrides for item in ("--set", o)]
                command = [*runyard, "run", entry.spec, *sets, "--id", entry.job_id, *extra_args]
            say(f"{'resuming' if resuming else 'starting'} #{entry.id} {entry.job_id} "
                f"(priority {entry.priority})")
            process = subprocess.Popen(command, cwd=self.workdir)
            self._set(entry.id, status=RUNNING, pid=process.pid, started=time.time())
            code = process.wait()
            status = DONE if code == 0 else FAILED
            failures += status == FAILED
            self._set(entry.id, status=status, pid=None, finished=time.time(), exit_code=code)
            say(f"#{entry.id} {entry.job_id}: {status} (exit {code})")
        blocked = [e for e in self.entries() if e.status in (QUEUED, BLOCKED)]
        for entry in blocked:
            self._set(entry.id, status=BLOCKED)
            say(f"#{entry.id} {entry.job_id} is blocked: it runs after {entry.after}, which did not finish")
        return failures + len(blocked)


def _entry(row: tuple) -> Entry:
    (entry_id, spec, overrides, priority, after, job_id, status, pid, added, started,
     finished, exit_code) = row
    return Entry(entry_id, spec, json.loads(overrides), priority, after, job_id, status, pid,
                 added, started, finished, exit_code)


def _job_state(workdir: Path, job_id: str) -> str:
    """done / failed / queued (never ran, or can be resumed), from the job's MLflow run."""
    path = Ledger.folder(workdir) / f"{job_id}.json"
    if not path.exists():
        return QUEUED
    ledger = Ledger.load(path)
    if not ledger.run_id:
        return QUEUED
    from runyard.tracking.store import client_for

    status = client_for(ledger.tracking_uri).get_run(ledger.run_id).info.status
    return {"FINISHED": DONE, "FAILED": FAILED}.get(status, QUEUED)


def _wait_for(pid: int, say: Callable[[str], None]) -> None:
    say(f"waiting for job process {pid}, left running by a queue runner that stopped")
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(2)


def runyard_command() -> list[str]:
    """How to start runyard again from here (the same interpreter and package)."""
    script = Path(sys.executable).with_name("runyard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runyard.cli.main"]
