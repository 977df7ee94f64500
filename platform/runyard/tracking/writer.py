"""One MLflow writer per job: a background thread that owns every MLflow call.

Trials report metrics at whatever rate they like; the writer batches them (up to 1,000 per
`log_batch`) and flushes every `flush_s` seconds, so tracking costs a request per batch
instead of a request per value (~50 ms each against a server), and never blocks the caller.
Calls are executed in the order they were made, so a run's metrics are always written
before the run is ended. When the tracking server cannot be reached (restarting, network
gone) for longer than MLflow's own HTTP retries last (~2 min), the writer keeps retrying the
call it is on, with backoff, and everything after it waits in order: nothing is dropped.
Errors the server answers with (a bad request) still fail that call at once.

The writer also opens the store: its thread's first call is `connect`, so that importing
MLflow (~1.2 s) and opening its store (~1 s for the embedded SQLite one) can happen while
Tune starts the first trial instead of before. With `open_later`, the thread waits for
`open()` first (the driver's Tune callback calls it once the first trial's process has been
asked for, so the two do not share one core before that). Nothing here imports MLflow on the
caller's thread. If `connect` fails, every call after it fails with that error (`connected`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

import requests

from runyard.tracking.tags import PARENT

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
# mlflow.utils.rest_utils wraps a connection that failed after all its retries (refused,
# reset, timed out, 5xx retries used up) in an MlflowException with these words; a request
# the server answered and refused is a RestException instead.
UNREACHABLE_MESSAGES = ("failed with exception", "failed with timeout exception")


def server_unreachable(error: BaseException) -> bool:
    """Whether a tracking call failed because no server answered (worth retrying as is)."""
    from mlflow.exceptions import MlflowException, RestException

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

    def when_made(self, then: Callable[[str], None]) -> None:
        """Call `then(run id)` once the run exists (on the writer's thread, or now if it
        exists already); never, if making it failed."""
        self._future.add_done_callback(
            lambda made: then(made.result()) if made.exception() is None else None)

    def __reduce__(self) -> tuple:
        # Crossing a process boundary (Tune pickles callbacks): only the id travels.
        return (RunRef.of, (self.id,))


class TrackingWriter:
    def __init__(self, connect: Callable[[], MlflowClient], flush_s: float = 1.0,
                 max_retry_delay_s: float = 30.0, open_later: bool = False):
        self.client: MlflowClient | None = None
        self.connected: Future = Future()  # the client, once `connect` has made it
        self._connect = connect
        self._opening = threading.Event()
        if not open_later:
            self._opening.set()
        self.flush_s = flush_s
        self.max_retry_delay_s = max_retry_delay_s
        self._tasks: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._pending: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="runyard-tracking", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called by the driver

    def open(self) -> None:
        """Let the thread connect now (with `open_later`); calling it again does nothing."""
        self._opening.set()

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the writer thread, after everything submitted before it."""
        future: Future = Future()
        self._tasks.put((fn, future))
        return future

    def create_run(self, experiment_id: Callable[[], str], name: str, tags: dict[str, str],
                   params: dict[str, str], parent: RunRef | None = None) -> RunRef:
        """`experiment_id` is asked on the writer's thread (it may be known only once connected).
        The run starts when this is called, not when the writer gets to it: a job's run is
        asked for before its trial starts, and made a second or two later."""
        created: list[str] = []  # a retried create() must not make a second run
        started_ms = int(time.time() * 1000)

        def create() -> str:
            if not created:
                all_tags = dict(tags)
                if parent is not None:
                    all_tags[PARENT] = parent.id
                created.append(self.client.create_run(experiment_id(), start_time=started_ms,
                                                      run_name=name, tags=all_tags).info.run_id)
            self._log_params(created[0], params)
            return created[0]

        return RunRef(self.submit(create))

    def log_metrics(self, run: RunRef, metrics: dict[str, float], step: int,
                    timestamp_ms: int | None = None) -> None:
        """Queue metrics for the next batch, stamped now unless they were measured earlier."""
        timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        values = [(key, float(value)) for key, value in metrics.items()]

        def queue_them() -> None:
            from mlflow.entities import Metric

            self._pending.setdefault(run.id, []).extend(
                Metric(key, value, timestamp, step) for key, value in values)

        self.submit(queue_them)

    def set_tags(self, run: RunRef, tags: dict[str, str]) -> Future:
        return self.submit(lambda: self._log_tags(run.id, tags))

    def log_artifacts(self, run: RunRef, local_dir: str, artifact_path: str | None = None) -> Future:
        return self.submit(lambda: self.client.log_artifacts(run.id, local_dir, artifact_path))

    def log_text(self, run: RunRef, text: str | Callable[[], str], artifact_file: str) -> Future:
        """`text`, or a function that makes it on the writer's thread (off the caller's path)."""
        return self.submit(lambda: self.client.log_text(
            run.id, text if isinstance(text, str) else text(), artifact_file))

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
        self.open()
        self.submit(self._flush_all).result()

    def backlog(self) -> int:
        """Tasks waiting for the writer (exported to dashboards as the tracking backlog)."""
        return self._tasks.qsize()

    def close(self) -> None:
        """Deliver everything submitted so far, then stop the thread."""
        self.open()
        self._tasks.put(None)
        self._thread.join()

    # ------------------------------------------------------------------------ writer thread

    def _loop(self) -> None:
        self._opening.wait()
        try:
            self.client = self._connect()
        except BaseException as error:  # noqa: BLE001 — every call after it reports it
            self.connected.set_exception(error)
        else:
            self.connected.set_result(self.client)
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
                if self.client is None:  # never connected: nothing can be written
                    future.set_exception(self.connected.exception())
                    continue
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
        if self.client is None:
            self._pending.clear()
            return
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
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + PARAMS_PER_BATCH])

    def _log_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[start : start + PARAMS_PER_BATCH])
