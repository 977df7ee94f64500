"""What the researcher sees while a job runs.

On a terminal: a live panel (trials by state, the best objective so far, the running trials'
latest metrics). Piped or in CI: plain, timestamped lines — a trial's start and end, and for
a single-trial job one line per iteration, at most one a second.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runyard.execute.payload import TrialPayload
from runyard.execute.trainable import FINISHED

FAILURE_LINES = 5  # lines of a failed trial's error shown above its last one
OUR_FRAME = re.compile(r'\s+File ".*[/\\](ray|runyard)[/\\]')  # a traceback frame in Ray or runyard


def _error_message(traceback: str) -> list[str]:
    """The non-empty lines of a trial's error after the frames of Ray's and runyard's code:
    the exception's message (a program's stderr tail and exit), or the researcher's own
    frames where the error is in their code."""
    lines = [line for line in traceback.strip().splitlines() if line.strip()]
    start = 0
    for index, line in enumerate(lines):
        if OUR_FRAME.match(line):
            start = index + 1
    while start < len(lines) and lines[start].startswith("    "):
        start += 1  # the frame's source line and its ^^^ markers
    return lines[start:] or lines


class ProgressCallback(tune.Callback):
    def __init__(self, console: Console, title: str, total: int, metric: str, mode: str,
                 shown_metrics: list[str]):
        self.console = console
        self.title = title
        self.total = total
        self.metric = metric
        self.mode = mode
        self.shown = shown_metrics
        self.started = time.monotonic()
        self.state: dict[str, str] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.best: tuple[float, str] | None = None
        self.causes: dict[str, list[str]] = {}  # a failed trial's last error line -> its trials
        self.last_line = 0.0
        self.live = Live(console=console, auto_refresh=False, transient=False) \
            if console.is_terminal else None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the terminal stays here.
        return {**self.__dict__, "console": None, "live": None}

    # ------------------------------------------------------------------------- Tune events

    def setup(self, **info: Any) -> None:
        if self.live:
            self.live.start()
        self._say(f"{self.title}: {self.total} trial(s)")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = self._id(trial)
        self.state[trial_id] = "running"
        if self.total > 1:
            self._say(f"{trial_id} started  {trial.config['trial']['label']}")
        self._refresh()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get(FINISHED):
            return  # no iteration: the workload ended by itself after its last one
        trial_id = self._id(trial)
        self.latest[trial_id] = result
        value = result.get(self.metric)
        if value is not None and (self.best is None or self._better(value, self.best[0])):
            self.best = (value, trial_id)
        now = time.monotonic()
        if self.total == 1 and not self.live and now - self.last_line >= 1.0:
            self.last_line = now
            self._say(f"iter {result['training_iteration']:>4}  {self._metrics(result)}")
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "failed")
        self._say_why(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for cause, trial_ids in self.causes.items():
            if len(trial_ids) > 1:  # said once, with the count, however many trials
                self._say(f"{len(trial_ids)} trials failed the same way ({', '.join(trial_ids)})"
                          f": {cause[:300]}")
        self.close()

    # --------------------------------------------------------------------------- rendering

    def close(self) -> None:
        if self.live and self.live.is_started:
            self._refresh()
            self.live.stop()

    def _finish(self, trial: Any, state: str) -> None:
        trial_id = self._id(trial)
        self.state[trial_id] = state
        result = self.latest.get(trial_id, {})
        self._say(f"{trial_id} {state:<6} after {result.get('training_iteration', 0)} iter  "
                  f"{self._metrics(result)}")
        self._refresh()

    def _say_why(self, trial: Any) -> None:
        """A failed trial's cause in a few lines: the end of its error (for a program, the
        end of its stderr and its exit), once per distinct cause. The whole traceback is
        the run's error.txt; Tune's own copy of it stays off the terminal
        (tune_runner._quiet_tune)."""
        text = Path(trial.error_file).read_text() if trial.error_file else ""
        lines = _error_message(text)
        cause = lines[-1] if lines else "no error recorded"
        trial_id = self._id(trial)
        alike = self.causes.setdefault(cause, [])
        alike.append(trial_id)
        if len(alike) > 1:
            self._say(f"  {trial_id}: the same error as {alike[0]}")
            return
        for line in lines[-1 - FAILURE_LINES:-1]:
            self._say(f"  | {line[:300]}")
        self._say(f"  {cause[:500]}")
        self._say(f"  full logs: {trial_id}'s run in MLflow, artifacts error.txt, stdout.log, "
                  "stderr.log")

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _metrics(self, result: dict[str, Any]) -> str:
        return "  ".join(f"{name}={result[name]:.4g}" for name in self.shown if name in result)

    @staticmethod
    def _id(trial: Any) -> str:
        return TrialPayload.of(trial.config).trial_id

    def _counts(self) -> str:
        states = list(self.state.values())
        running, done, failed = (states.count(s) for s in ("running", "done", "failed"))
        pending = self.total - len(states)
        best = (f"  best {self.metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else "")
        elapsed = time.monotonic() - self.started
        return (f"{pending} pending · {running} running · {done} done · {failed} failed"
                f"{best} · {elapsed:5.0f}s")

    def _say(self, line: str) -> None:
        stamp = f"[{time.monotonic() - self.started:7.1f}s]"
        if self.live:
            self.live.console.print(f"{stamp} {line}", highlight=False)
        else:
            print(f"{stamp} {line}", file=self.console.file, flush=True)

    def _refresh(self) -> None:
        if not self.live:
            return
        table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
        table.add_column("trial")
        table.add_column("iter", justify="right")
        for name in self.shown:
            table.add_column(name, justify="right")
        for trial_id, state in self.state.items():
            if state != "running":
                continue
            result = self.latest.get(trial_id, {})
            table.add_row(trial_id, str(result.get("training_iteration", 0)),
                          *(f"{result[n]:.4g}" if n in result else "" for n in self.shown))
        self.live.update(Group(Text(f"{self.title}: {self._counts()}", style="bold"), table),
                         refresh=True)
