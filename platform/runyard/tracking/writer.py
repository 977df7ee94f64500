"""One MLflow writer per job: a background thread that owns every MLflow call.

Trials report metrics at whatever rate they like; the writer batches them (up to 1,000 per
`log_batch`) and flushes every `flush_s` seconds, so tracking costs a request per batch
instead of a request per value (~50 ms each against a server), and never blocks the caller.
Calls are executed in the order they were made, so a run's metrics are always written
before the run is ended. When the tracking server cannot be reached (restarting, network
gone) for longer than MLflow's own HTTP retries last (~2 min), the writer keeps retrying the
call it is on, with backoff, and everything after it waits in order: nothing is dropped.
Errors the server answers with (a bad request) still fail that call at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from runyard.tracking.tags import PARENT

log = logging.getLogger(__name__)

METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
# mlflow.utils.rest_utils wraps a connection that failed after all its retries (refused,
# reset, timed out, 5xx retries used up) in an MlflowException with these words; a request
# the server answered and refused is a RestException instead.
UNREACHABLE_MESSAGES = ("failed with exception", "failed with timeout exception")


def server_unreachable(error: BaseException) -> bool:
    """Whether a tracking call failed because no server answered (worth retrying as is)."""
    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    return (isinstance(error, MlflowException) and not isinstance(error, RestException)
            and str(error.message).startswith("API request to")
            and any(words in str(error.message) for words in UNREACHABLE_MESSAGES))


class RunRef:
    """A run that may not exist yet: its id arrives when the writer has created it."""

    def __init__(self, future: Future):
        self._future = future

    @classmethod
    def of(cls, run_id: str) -> RunRef:
        """A reference to a run that exists already."""
        future: Future = Future()
        future.set_result(run_id)
        return cls(future)

    @property
    def id(self) -> str:
        return self._future.result()

    def __reduce__(self) -> tuple:
        # Crossing a process boundary (Tune pickles callbacks): only the id travels.
        return (RunRef.of, (self.id,))


class TrackingWriter:
    def __init__(self, client: MlflowClient, flush_s: float = 1.0, max_retry_delay_s: float = 30.0):
        self.client = client
        self.flush_s = flush_s
        self.max_retry_delay_s = max_retry_delay_s
        self._tasks: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="runyard-tracking", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called by the driver

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the writer thread, after everything submitted before it."""
        future: Future = Future()
        self._tasks.put((fn, future))
        return future

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str],
                   params: dict[str, str], parent: RunRef | None = None) -> RunRef:
        created: list[str] = []  # a retried create() must not make a second run

        def create() -> str:
            if not created:
                all_tags = dict(tags)
                if parent is not None:
                    all_tags[PARENT] = parent.id
                created.append(self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id)
            self._log_params(created[0], params)
            return created[0]

        return RunRef(self.submit(create))

    def log_metrics(self, run: RunRef, metrics: dict[str, float], step: int,
                    timestamp_ms: int | None = None) -> None:
        """Queue metrics for the next batch, stamped now unless they were measured earlier."""
        timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        entries = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        self.submit(lambda: self._pending.setdefault(run.id, []).extend(entries))

    def set_tags(self, run: RunRef, tags: dict[str, str]) -> Future:
        return self.submit(lambda: self._log_tags(run.id, tags))

    def log_artifacts(self, run: RunRef, local_dir: str, artifact_path: str | None = None) -> Future:
        return self.submit(lambda: self.client.log_artifacts(run.id, local_dir, artifact_path))

    def log_text(self, run: RunRef, text: str, artifact_file: str) -> Future:
        return self.submit(lambda: self.client.log_text(run.id, text, artifact_file))

    def end_run(self, run: RunRef, status: str) -> Future:
        def end() -> None:
            self._flush(run.id)
            self.client.set_terminated(run.id, status=status)

        return self.submit(end)

    def reopen_run(self, run: RunRef) -> Future:
        """Mark an ended run RUNNING again: a resumed or re-run trial continues in it."""
        return self.submit(lambda: self.client.update_run(run.id, status="RUNNING"))

    def flush_run(self, run: RunRef) -> Future:
        """Write the run's queued metrics now, after everything submitted before."""
        return self.submit(lambda: self._flush(run.id))

    def flush(self) -> None:
        """Block until everything submitted so far, metrics included, is written."""
        self.submit(self._flush_all).result()

    def backlog(self) -> int:
        """Tasks waiting for the writer (exported to dashboards as the tracking backlog)."""
        return self._tasks.qsize()

    def close(self) -> None:
        """Deliver everything submitted so far, then stop the thread."""
        self._tasks.put(None)
        self._thread.join()

    # ------------------------------------------------------------------------ writer thread

    def _loop(self) -> None:
        while True:
            timeout = max(0.0, self.flush_s - (time.monotonic() - self._last_flush))
            try:
                task = self._tasks.get(timeout=timeout)
            except queue.Empty:
                task = ()
            if task is None:
                self._flush_all()
                return
            if task:
                fn, future = task
                try:
                    future.set_result(self._until_reachable(fn))
                except Exception as error:  # noqa: BLE001 — reported to whoever waits on it
                    log.warning("tracking call failed: %s", error)
                    future.set_exception(error)
            if time.monotonic() - self._last_flush >= self.flush_s:
                self._flush_all()

    def _until_reachable(self, fn: Callable[[], Any]) -> Any:
        """fn(), retried with backoff for as long as the server cannot be reached."""
        delay = 1.0
        while True:
            try:
                return fn()
            except Exception as error:
                if not server_unreachable(error):
                    raise
                log.warning("tracking server unreachable (%s); retrying in %.0f s, %d calls waiting",
                            error, delay, self._tasks.qsize())
                time.sleep(delay)
                delay = min(2 * delay, self.max_retry_delay_s)

    def _flush_all(self) -> None:
        for run_id in list(self._pending):
            try:
                self._flush(run_id)
            except Exception as error:  # noqa: BLE001 — keep the other runs' metrics flowing
                log.warning("could not write metrics of run %s: %s", run_id, error)
        self._last_flush = time.monotonic()

    def _flush(self, run_id: str) -> None:
        metrics = self._pending.pop(run_id, [])
        for start in range(0, len(metrics), METRICS_PER_BATCH):
            try:
                self.client.log_batch(run_id, metrics=metrics[start : start + METRICS_PER_BATCH])
            except Exception:
                # Keep what was not delivered; the next flush tries again (a restarting
                # tracking server must not cost metrics).
                self._pending[run_id] = metrics[start:] + self._pending.get(run_id, [])
                raise

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])

    def _log_tags(self, run_id: str, tags: dict[str, str]) -> None:
        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[start : start + PARAMS_PER_BATCH])
