"""A queue of scheduled sweeps, persisted in SQLite (`.runyard/queue.db`).

`runyard queue run` drains it: the highest priority entry whose `--after` job has finished
runs next, each as its own `runyard run` process (a crashing sweep cannot take the queue
down with it), all joining one Ray cluster, side by side: the next sweep starts as soon as
the cluster has room for one of its trials. Every entry gets its job id when it is queued,
so a queue runner that was killed finds, on restart, which job each entry became: a job
that was mid-run is resumed, not started again.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from runyard.errors import UserError
from runyard.execute.ledger import Ledger
from runyard.execute.storage import Storage
from runyard.paths import QUEUE_DB, QUEUE_DIR
from runyard.plan import fits, trial_request
from runyard.plan.resources import describe
from runyard.processes import start_group, stop_processes, wait_gone
from runyard.spec import SpecError, load_spec

QUEUED, RUNNING, DONE, FAILED, BLOCKED = "queued", "running", "done", "failed", "blocked"
SETTLE_S = 120.0  # longest wait for a started sweep to take its room
STOP_GRACE_S = 60.0  # a stopped sweep's time to end its runs KILLED

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


# (entry, whether its job exists already and is resumed, the Ray address) -> command line
CommandFor = Callable[[Entry, bool, str], list[str]]


class SweepQueue:
    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.folder = self.workdir / QUEUE_DIR  # each sweep's log; the runner's Ray token
        self.storage = Storage.resolve(None, self.workdir)  # where the sweeps' ledgers are
        path = self.workdir / QUEUE_DB
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute(SCHEMA)

    def add(self, spec: Path, overrides: list[str], priority: int, after: str | None,
            job_id: str) -> Entry:
        known = {e.job_id for e in self.entries()}
        if after and after not in known and not self.storage.exists(self.storage.ledger_path(after)):
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
            state = before.status if before else _job_state(self.storage, entry.after)
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

    def run(self, command_for: CommandFor, address: str, room: ClusterRoom,
            say: Callable[[str], None], max_running: int | None = None,
            poll_s: float = 1.0) -> int:
        """Drain the queue onto the cluster at `address`, each sweep's output in
        <folder>/<job id>.log; returns how many entries failed or stayed blocked.

        The next ready entry starts as soon as `room` says the cluster can hold one of its
        trials, so a sweep's stragglers never leave the cluster idle while the next sweep
        waits. Priority is strict: a lower entry never overtakes a ready higher one that
        does not fit yet. After each start the runner lets that sweep take its room before
        judging room again, so two sweeps are not started into one slot. `max_running`
        caps how many sweeps run at once (1: one after another). `command_for(entry,
        resuming, address)` is the command line that runs an entry's job (the application
        layer builds it from the same request the CLI makes)."""
        self.recover(lambda pid: _wait_for(pid, say))
        running: dict[int, subprocess.Popen] = {}
        settling: _Settling | None = None
        waiting_for: int | None = None  # the entry last reported as waiting for room
        failures = 0
        try:
            while True:
                for entry_id, process in list(running.items()):
                    if (code := process.poll()) is not None:
                        del running[entry_id]
                        failures += self._ended(entry_id, code, say)
                if settling is not None and settling.over(room):
                    settling = None
                entry = self.next_ready()
                if entry is None and not running:
                    break
                has_slot = max_running is None or len(running) < max_running
                if entry is not None and settling is None and has_slot:
                    request = room.request_of(entry)
                    if request is None or room.admits(request):
                        process = self._start(entry, command_for, address, say)
                        running[entry.id] = process
                        settling = _Settling(process, request or {}, room.available())
                    elif waiting_for != entry.id:
                        waiting_for = entry.id
                        free = room.available()
                        say(f"#{entry.id} {entry.job_id} waits for room: a trial holds "
                            f"{describe(request)}; free now: "
                            f"{describe({name: free.get(name, 0) for name in request})}")
                time.sleep(poll_s)
        except KeyboardInterrupt:
            self._stop(running, say)
            raise
        blocked = [e for e in self.entries() if e.status in (QUEUED, BLOCKED)]
        for entry in blocked:
            self._set(entry.id, status=BLOCKED)
            say(f"#{entry.id} {entry.job_id} is blocked: it runs after {entry.after}, which did not finish")
        return failures + len(blocked)

    def _start(self, entry: Entry, command_for: CommandFor, address: str,
               say: Callable[[str], None]) -> subprocess.Popen:
        """The entry's job as its own `runyard run` (or `resume`) process, its output in a log
        file: sweeps side by side would garble one terminal."""
        resuming = self.storage.exists(self.storage.ledger_path(entry.job_id))
        command = command_for(entry, resuming, address)
        log = self.log_path(entry)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as output:
            # Its own session: a Ctrl-C at the terminal reaches the runner alone, which then
            # stops each sweep once (_stop). Should the runner die, the sweep gets SIGTERM.
            process = start_group(command, end_with_parent=True, cwd=self.workdir, stdout=output,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._set(entry.id, status=RUNNING, pid=process.pid, started=time.time())
        say(f"{'resuming' if resuming else 'starting'} #{entry.id} {entry.job_id} "
            f"(priority {entry.priority}); output: {log.relative_to(self.workdir)}")
        return process

    def log_path(self, entry: Entry) -> Path:
        return self.folder / f"{entry.job_id}.log"

    def _ended(self, entry_id: int, code: int, say: Callable[[str], None]) -> int:
        status = DONE if code == 0 else FAILED
        self._set(entry_id, status=status, pid=None, finished=time.time(), exit_code=code)
        entry = self.get(entry_id)
        say(f"#{entry.id} {entry.job_id}: {status} (exit {code})"
            + ("" if status == DONE else f"; see {self.log_path(entry).relative_to(self.workdir)}"))
        return status == FAILED

    def _stop(self, running: dict[int, subprocess.Popen], say: Callable[[str], None]) -> None:
        """The runner is stopping (Ctrl-C, SIGTERM): stop its sweeps the way `runyard stop`
        does, so their runs end KILLED, and put them back in the queue; the next `queue run`
        resumes them from their checkpoints."""
        stop_processes(list(running.values()), STOP_GRACE_S)
        for entry_id in running:
            self._set(entry_id, status=QUEUED, pid=None)
            entry = self.get(entry_id)
            say(f"#{entry.id} {entry.job_id}: stopped; `runyard queue run` resumes it")


class ClusterRoom:
    """The free resources of the Ray cluster this process is connected to, against what one
    trial of a queued spec holds (plan.trial_request).

    Free resources are the cluster's totals, not one node's: the sweep's own placement
    decides which node. A request the cluster could never hold is admitted, so that the
    sweep's `runyard run` fails at once with its own explanation instead of waiting here."""

    def __init__(self) -> None:
        self.requests: dict[int, dict[str, float] | None] = {}  # entry id -> its request

    def request_of(self, entry: Entry) -> dict[str, float] | None:
        """What one trial of the entry holds; None if its spec no longer loads (its
        `runyard run` then reports why)."""
        if entry.id not in self.requests:
            try:
                self.requests[entry.id] = trial_request(load_spec(entry.spec, entry.overrides))
            except (SpecError, UserError):
                self.requests[entry.id] = None
        return self.requests[entry.id]

    def available(self) -> dict[str, float]:
        import ray

        return ray.available_resources()

    def admits(self, request: dict[str, float]) -> bool:
        import ray

        return fits(request, self.available()) or not fits(request, ray.cluster_resources())


@dataclass
class _Settling:
    """A sweep just started, until it has taken the room it was started into (some resource
    it asks for is down by its request), has exited, or SETTLE_S passed (another sweep may
    have freed as much as it took)."""
    process: subprocess.Popen
    request: dict[str, float]
    before: dict[str, float]
    since: float = field(default_factory=time.monotonic)

    def over(self, room: ClusterRoom) -> bool:
        if self.process.poll() is not None or time.monotonic() - self.since > SETTLE_S:
            return True
        now = room.available()
        return any(now.get(name, 0) <= self.before.get(name, 0) - amount + 1e-9
                   for name, amount in self.request.items() if amount > 0)


def _entry(row: tuple) -> Entry:
    (entry_id, spec, overrides, priority, after, job_id, status, pid, added, started,
     finished, exit_code) = row
    return Entry(entry_id, spec, json.loads(overrides), priority, after, job_id, status, pid,
                 added, started, finished, exit_code)


def _job_state(storage: Storage, job_id: str) -> str:
    """done / failed / queued (never ran, or can be resumed), from the job's MLflow run."""
    path = storage.ledger_path(job_id)
    if not storage.exists(path):
        return QUEUED
    ledger = Ledger.load(path)
    if not ledger.run_id:
        return QUEUED
    from runyard.tracking.store import client_for

    status = client_for(ledger.tracking_uri).get_run(ledger.run_id).info.status
    return {"FINISHED": DONE, "FAILED": FAILED}.get(status, QUEUED)


def _wait_for(pid: int, say: Callable[[str], None]) -> None:
    say(f"waiting for job process {pid}, left running by a queue runner that stopped")
    wait_gone(pid)
