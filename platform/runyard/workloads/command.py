"""command — any program as a workload: runyard runs it once per trial and reads what it reports.

The program, `config.command`, is a list of arguments or a string split as a shell would split
it; each argument is then filled in with `{params.NAME}` (the trial's `config.params`, which a
sweep varies as `config.params.NAME`) and `{seed}`. It runs in its own process group, with
the project directory (on a cluster, the submitted copy of it) as its working directory, and
`python` on its PATH is the interpreter runyard runs under — or, when the spec's
`environment:` block asks for packages of the program's own, that of a virtualenv layered on
runyard's (environments.py), with the block's `variables` in its environment.

What it reports is read where the program already writes it (command_reports.py): lines on
its stdout (`reports: stdout`) or on the file descriptor whose number is in
$RUNYARD_METRICS_FD (`reports: fd`, for programs whose stdout is noisy):

    {"epoch": 3, "loss": 0.25, "acc": 0.91}     a JSON object
    global_step=60, episodic_return=[15.]        or name=value pairs

or the scalars it writes with a TensorBoard SummaryWriter (`reports: tensorboard`). A report
holding at least one of `config.metrics` is one iteration, one `step()`; its other numbers are
recorded beside it. `config.step` names the reported value that is the iteration's step in
tracking (TensorBoard events carry their own). A line that looks like a report and does not
read as one is counted, and the first is quoted in a warning and in a "no report" failure.

With `reports: tensorboard` the program runs in a working directory of the trial's own, in
which every top-level entry of the project is a link, except the output folders
(`config.outputs`: runs/, logs/ ...), which the program creates afresh: two trials of one
project writing `runs/<name>/` at the same time each write their own, and the event files
become the trial's `tensorboard/` artifact.

Checkpoints: the program writes its state into $RUNYARD_CHECKPOINT_DIR, then says it is
complete in a report, alone or in the line of the iteration it ends:
  "checkpoint": "NAME"   the directory NAME inside it is complete. runyard moves it away at
                         once (a rename): exact however soon the program writes the next one,
                         which it writes under a new name (epoch-3, epoch-4, ...).
  "checkpoint": true     the whole directory is complete. runyard copies it at once, with the
                         program paused (SIGSTOP to its group) during the copy; exact when the
                         program begins its next checkpoint some work after the report (an
                         epoch), not in the instant after it.
Either way a checkpoint the program is still writing is never the one kept. A retried,
resumed or re-run trial starts the program again with $RUNYARD_RESTORE_DIR naming a copy of
its last complete checkpoint (the contents of NAME, or of the whole directory; the variable
is absent on a fresh start) and an empty $RUNYARD_CHECKPOINT_DIR. The program continues
from there; the reports of iterations runyard had already tracked when it saved (those
between the program's checkpoint and runyard's own) are read and skipped, so each
iteration is tracked once.

Ending: the program exiting with code 0 ends the trial FINISHED after its last report
(`WorkloadFinished`); any other exit is a failed trial whose error is the end of its stderr.
When runyard stops the trial first (stop conditions, the sweep's time budget, Ctrl-C) it
terminates the program's whole process group: SIGTERM, then SIGKILL after `stop_grace_s`.
On Linux the program also gets SIGTERM when the trial process dies without stopping it (a
SIGKILL from Ray's memory monitor, a lost node), so no orphan keeps a GPU busy.
Its stdout and stderr become the trial's artifacts stdout.log and stderr.log.
"""

from __future__ import annotations

import collections
import difflib
import json
import os
import queue
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Literal

from pydantic import Field

from runyard.processes import signal_group, start_group, stop_group

from runyard.workloads.base import (
    Direction, Iteration, Workload, WorkloadConfig, WorkloadContext, WorkloadFinished,
)
from runyard.workloads.command_reports import (
    Point, Report, RunLink, StepGroups, TensorBoardReader, is_near_miss, parse_report,
)
from runyard.workloads.environments import EnvironmentFailed, bin_dir, ensure_environment

STDERR_TAIL_LINES = 30
STATE_FILE = "command.json"
POLL_S = 0.5  # how often event files or the MLflow run are read while the program runs
# Where researchers' scripts write TensorBoard, MLflow and W&B output, relative to their
# working directory: made afresh for each trial instead of linked to the project's.
DEFAULT_OUTPUTS = ["runs", "logs", "tb_logs", "lightning_logs", "mlruns", "wandb", "outputs"]


class CommandConfig(WorkloadConfig):
    command: str | list[str] = Field(
        description="the program and its arguments: a list, or a string split like a shell "
                    "line; each argument may hold {params.NAME} and {seed}")
    params: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="values the command refers to as {params.NAME}; a sweep varies them as "
                    "config.params.NAME")
    metrics: dict[str, Direction] = Field(
        min_length=1,
        description="every metric the program reports, with the direction that is better "
                    "(max or min); the sweep metric and stop thresholds must be among them")
    reports: Literal["stdout", "fd", "tensorboard", "mlflow"] = Field(
        "stdout",
        description="where the program writes its reports: lines on stdout, or on the file "
                    "descriptor numbered in $RUNYARD_METRICS_FD; tensorboard: the scalars "
                    "of its SummaryWriter event files, every tag a metric at its step; mlflow: "
                    "its own MLflow calls, which land in the trial's run")
    step: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.\-/]*$",
        description="the reported value that is the iteration's step in MLflow and the x "
                    "axis of the sweep's plots (e.g. global_step); none: the iteration's "
                    "number. Not with reports: tensorboard or mlflow, whose points carry "
                    "their own step")
    outputs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OUTPUTS),
        description="reports: tensorboard: top-level folders of the project that each trial "
                    "gets afresh in its own working directory (where its event files go)")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="environment variables set for the program, on top of runyard's own")
    step_timeout_s: float | None = Field(
        None, gt=0,
        description="fail the trial when the program reports no iteration for this long; "
                    "none: wait as long as it runs")
    stop_grace_s: float = Field(
        5.0, ge=0,
        description="seconds the program has to exit after SIGTERM before it is killed")


def command_arguments(config: CommandConfig, seed: int) -> list[str]:
    """The program's argument list for this trial. A string is split before it is filled in,
    so a value with spaces stays one argument."""
    words = shlex.split(config.command) if isinstance(config.command, str) else config.command
    params = SimpleNamespace(**config.params)
    return [word.format(params=params, seed=seed) for word in words]


def _placeholder_problems(config: CommandConfig) -> list[str]:
    """`config.command: ...` for every {field} that names nothing the command is filled with."""
    words = shlex.split(config.command) if isinstance(config.command, str) else config.command
    problems = []
    for word in words:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(word) if name is not None]
        except ValueError as error:
            problems.append(f"config.command: {word!r}: {error} (write {{{{ and }}}} for "
                            "literal braces)")
            continue
        for name in fields:
            root, _, rest = name.partition(".")
            if root == "seed" and not rest:
                continue
            if root == "params" and rest in config.params:
                continue
            if root == "params":
                close = difflib.get_close_matches(rest, list(config.params), n=1)
                hint = f" (did you mean {{params.{close[0]}}}?)" if close else ""
                known = ", ".join(sorted(config.params)) or "nothing"
                problems.append(f"config.command: {{{name}}} is not in config.params{hint}; "
                                f"it holds: {known}")
            else:
                problems.append(f"config.command: {{{name}}} is unknown; a command may use "
                                "{params.NAME} and {seed}")
    return problems


def _say(line: str) -> None:
    print(f"runyard: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Iteration:
    number: int  # counted by the reader from the program's first report (or its checkpoint)
    reported: Iteration


@dataclass(frozen=True)
class _Exited:
    code: int
    points: tuple[tuple[int | None, dict[str, float]], ...] = ()  # reported after the last iteration


@dataclass(frozen=True)
class _Broken:
    message: str


class Command(Workload):
    Config = CommandConfig

    ends_by_itself = True
    blocks = ("environment",)

    @classmethod
    def declared_metrics(cls, config: CommandConfig) -> dict[str, Direction]:
        return dict(config.metrics)

    @classmethod
    def check_spec(cls, config: CommandConfig, context: WorkloadContext) -> list[str]:
        problems = _placeholder_problems(config)
        if not (config.command if isinstance(config.command, list) else config.command.strip()):
            problems.append("config.command: empty; write the program to run, e.g. "
                            "python train.py --lr {params.lr}")
        if config.step is not None and config.reports in ("tensorboard", "mlflow"):
            problems.append(f"config.step: {config.reports} reports carry their own step; "
                            "drop config.step, or report lines (reports: stdout) that hold it")
        if context.resources.workers > 1:
            problems.append("resources.workers: the command workload runs one program per "
                            "trial; start data-parallel workers inside the program, or set 1")
        return problems

    @classmethod
    def check_inputs(cls, config: CommandConfig, context: WorkloadContext) -> list[str]:
        """The program's own packages, installed on this machine now (or found built), so
        that a requirement pip cannot install stops the job before anything starts."""
        if context.environment is None or not context.environment.packages:
            return []
        try:
            ensure_environment(context.environment, log=_say)
        except EnvironmentFailed as error:
            return [f"environment.pip: {error}"]
        return []

    def setup(self, config: CommandConfig, context: WorkloadContext) -> None:
        self.config = config
        self.arguments = command_arguments(config, context.seed)
        self.seed = context.seed
        self.workdir = Path(context.workdir)
        self.parallel = context.parallel
        self.run_link: RunLink | None = None  # reports: mlflow, once the program starts
        self.environment = context.environment
        # The program's own packages: built on this machine once, by the first trial here.
        self.environment_dir = (ensure_environment(context.environment, log=_say)
                                if context.environment and context.environment.packages else None)
        self.scratch = Path(tempfile.mkdtemp(prefix="runyard-command-"))
        self.iteration = 0  # the last iteration step() returned
        self.restore_dir: Path | None = None
        self.first_number = 0  # the iteration the program starts from (its restored checkpoint)
        # Complete checkpoints by the iteration they end; written by the reader thread.
        self.snapshots: dict[int, Path] = {}
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.readers: list[threading.Thread] = []
        # Written by the reader threads, read by step() when the program ends: under the lock.
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.other_keys: set[str] = set()  # numeric keys reported that are not metrics
        self.near_misses = 0  # lines that look like reports and do not read as one
        self.first_near_miss = ""
        self.program_dir = self.workdir
        if config.reports == "tensorboard":
            self.program_dir = self._own_working_directory()

    def _own_working_directory(self) -> Path:
        """The trial's working directory for a program whose output folders must be its own:
        the project's top-level entries as links, the output folders left to be made."""
        own = self.scratch / "work"
        own.mkdir()
        for entry in self.workdir.iterdir():
            if entry.name not in self.config.outputs and entry.name != ".runyard":
                (own / entry.name).symlink_to(entry)
        return own

    # ----------------------------------------------------------------------- the process

    def _start(self) -> None:
        """Start the program: lazily, at the first step, because Tune may restore a
        checkpoint between setup() and the first step."""
        live = self.scratch / "checkpoint"
        shutil.rmtree(live, ignore_errors=True)
        live.mkdir()
        interpreter = (bin_dir(self.environment_dir) if self.environment_dir
                       else Path(sys.executable).parent)
        path = os.pathsep.join([str(interpreter), os.environ.get("PATH", "")])
        env = {**os.environ, "PATH": path,
               "PYTHONUNBUFFERED": "1",  # a Python program's reports arrive as it prints them
               "RUNYARD_CHECKPOINT_DIR": str(live), "RUNYARD_SEED": str(self.seed)}
        env.pop("RUNYARD_RESTORE_DIR", None)
        if self.restore_dir is not None:
            env["RUNYARD_RESTORE_DIR"] = str(self.restore_dir)
        report_read, report_write = os.pipe() if self.config.reports == "fd" else (None, None)
        if report_write is not None:
            env["RUNYARD_METRICS_FD"] = str(report_write)
        if self.environment_dir is not None:
            env["VIRTUAL_ENV"] = str(self.environment_dir)
        if self.environment is not None:
            env.update(self.environment.variables)
        if self.config.reports == "mlflow":
            self.run_link = self._link_to_run()
            env.update(self.run_link.environment())
        # Taken before the program starts: what it logs to its run from then on is this
        # start's (a retry's run holds the earlier try's points too).
        self.started_ms = int(time.time() * 1000)
        env.update(self.config.env)
        self.events: queue.Queue = queue.Queue()
        try:
            # Its own process group, which ends with the trial process (processes.py).
            self.process = start_group(
                self.arguments, end_with_parent=True, cwd=self.program_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(report_write,) if report_write is not None else ())
        except OSError as error:
            if report_read is not None:
                os.close(report_read)
            raise RuntimeError(f"could not start {self.arguments[0]!r} in {self.program_dir}: "
                               f"{error}") from None
        finally:
            if report_write is not None:
                os.close(report_write)
        stdout_log = open(self.scratch / "stdout.log", "a", buffering=1)
        stderr_log = open(self.scratch / "stderr.log", "a", buffering=1)
        outputs = [threading.Thread(target=self._keep_stderr, daemon=True,
                                    args=(self.process.stderr, stderr_log))]
        if report_read is None and self.config.reports in ("stdout", "fd"):
            source, log = self.process.stdout, stdout_log
        else:
            outputs.append(threading.Thread(target=self._keep_stdout,
                                            args=(self.process.stdout, stdout_log), daemon=True))
            source, log = (open(report_read, "rb"), None) if report_read is not None else (None, None)
        reports = threading.Thread(target=self._read_reports, daemon=True,
                                   args=(source, log, outputs, self.events, self.process))
        self.readers = [*outputs, reports]
        for thread in self.readers:
            thread.start()

    def _link_to_run(self) -> RunLink:
        """The trial's MLflow run, from the executor (which found it once the driver had
        made it)."""
        factory = self.parallel.get("mlflow_run")
        if factory is None:
            raise RuntimeError("reports: mlflow needs the trial's MLflow run, which runyard's "
                               "executor provides: run the job with runyard run")
        return factory()

    def _read_reports(self, stream: IO[bytes] | None, log: IO[str] | None,
                      outputs: list[threading.Thread], events: queue.Queue,
                      process: subprocess.Popen) -> None:
        """Turn the program's reports into iterations until it is done reporting (its report
        stream closed, or it exited and its event files are read to the end), then wait for
        it to exit."""
        number = self.first_number
        pending: list[tuple[int | None, dict[str, float]]] = []  # values of no iteration yet
        try:
            if stream is not None:
                reports = self._report_lines(stream, log)
            elif self.run_link is not None:
                since_ms = self.started_ms
                reports = self._polled_reports(
                    process, lambda: self.run_link.read(self.config.metrics, since_ms))
            else:
                reports = self._polled_reports(process, TensorBoardReader(self.program_dir).read)
            for report in reports:
                metrics = {k: v for k, v in report.values.items() if k in self.config.metrics}
                others = {k: v for k, v in report.values.items() if k not in metrics}
                step = report.step
                if step is None and self.config.step in report.values:
                    step = int(report.values[self.config.step])
                with self.lock:
                    self.other_keys.update(others)
                if others and (metrics or step is not None):
                    pending.append((step, others))
                if metrics:
                    number += 1
                if report.checkpoint is not False:
                    self._snapshot(number, process, report.checkpoint)
                if metrics:
                    events.put(_Iteration(number, Iteration(metrics, step, tuple(pending),
                                                            recorded=self.run_link is not None)))
                    pending = []
        except (OSError, ValueError) as error:
            events.put(_Broken(f"could not keep the checkpoint the program reported: {error}"))
        finally:
            if stream is not None:
                stream.close()
            for thread in outputs:
                thread.join()
            if log is not None:
                log.close()
            events.put(_Exited(process.wait(), tuple(pending)))

    def _report_lines(self, stream: IO[bytes], log: IO[str] | None) -> Iterator[Report]:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace")
            if log is not None:
                log.write(line)
            report = parse_report(line)
            if report is not None:
                yield report
            elif is_near_miss(line):
                self._near_miss(line.strip())

    def _near_miss(self, line: str) -> None:
        with self.lock:
            self.near_misses += 1
            first = self.near_misses == 1
            if first:
                self.first_near_miss = line[:200]
        if first:  # the trial's output, which the driver's terminal shows
            _say(f"{self._name()} printed a line that looks like a report but does not read "
                 f"as one: {line[:200]!r} (a report is a JSON object, or name=number pairs "
                 "separated by spaces, commas or semicolons, and nothing else)")

    @staticmethod
    def _polled_reports(process: subprocess.Popen, read: Callable[[], list[Point]]
                        ) -> Iterator[Report]:
        """Reports from a source read every POLL_S (event files, the MLflow run), one per
        step, until the program has exited and the source is read to the end."""
        groups = StepGroups()
        while True:
            exited = process.poll() is not None
            groups.add(read())
            yield from groups.complete(final=exited)
            if exited:
                return
            time.sleep(POLL_S)

    def _keep_stderr(self, stream: IO[bytes], log: IO[str]) -> None:
        with log:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace")
                log.write(line)
                with self.lock:
                    self.stderr_tail.append(line.rstrip("\n"))

    @staticmethod
    def _keep_stdout(stream: IO[bytes], log: IO[str]) -> None:
        with log:
            for raw in stream:
                log.write(raw.decode("utf-8", errors="replace"))

    def _snapshot(self, number: int, process: subprocess.Popen, mark: bool | str) -> None:
        """Keep the checkpoint the program just reported complete; save() sees it only once
        it is whole. A named one is moved out of the program's reach at once (a rename, no
        copy: exact however soon the program writes its next one). The whole directory is
        copied with the program paused (SIGSTOP to its group), so it cannot start writing
        the next checkpoint during the copy."""
        live = self.scratch / "checkpoint"
        final = self.scratch / "snapshots" / f"{number:08d}"
        final.parent.mkdir(exist_ok=True)
        if mark is True:
            partial = final.with_name(final.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            paused = signal_group(process.pid, signal.SIGSTOP)
            try:
                shutil.copytree(live, partial)
            finally:
                if paused:
                    signal_group(process.pid, signal.SIGCONT)
        else:
            partial = live / mark
            if Path(mark).name != mark or mark in (".", "..") or not partial.is_dir():
                raise ValueError(f"checkpoint {mark!r} names no directory directly inside "
                                 "$RUNYARD_CHECKPOINT_DIR")
        with self.lock:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            self.snapshots[number] = final

    def _stop(self) -> None:
        """Terminate the program and everything it started (its process group)."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_group(process.pid, self.config.stop_grace_s, leader=process)
        process.wait()
        for thread in self.readers:
            thread.join(timeout=5)

    # ------------------------------------------------------------------------ protocol

    def step(self) -> dict[str, float]:
        if self.process is None:
            self._start()
        while True:
            try:
                event = self.events.get(timeout=self.config.step_timeout_s)
            except queue.Empty:
                raise RuntimeError(f"{self._name()} reported no iteration for "
                                   f"{self.config.step_timeout_s} s (config.step_timeout_s)"
                                   ) from None
            if isinstance(event, _Exited):
                self._ended(event)
            if isinstance(event, _Broken):
                raise RuntimeError(event.message)
            if event.number <= self.iteration:
                continue  # tracked already, before the restore this run continues from
            self.iteration = event.number
            self._forget_old_snapshots()
            return event.reported

    def _ended(self, exited: _Exited) -> None:
        code = exited.code
        if code == 0 and self.iteration > 0:
            raise WorkloadFinished(exited.points)
        if code == 0:
            with self.lock:
                others = ", ".join(sorted(self.other_keys)) or "no report at all"
                misses = self.near_misses
                first = self.first_near_miss
            where = {"tensorboard": f"in TensorBoard event files under {self.program_dir}"
                     }.get(self.config.reports, "")
            miss = (f"; {misses} line(s) looked like reports but did not read as one, the "
                    f"first: {first!r}" if misses else "")
            raise RuntimeError(f"{self._name()} exited without reporting any of "
                               f"{', '.join(self.config.metrics)} (config.metrics){where}; it "
                               f"reported: {others}{miss}")
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0
               else f"exited with code {code}")
        with self.lock:
            tail = list(self.stderr_tail)
        last = next((line for line in reversed(tail) if line.strip()), "its stderr is empty")
        # The last line is the summary (runyard tags the run with it); the tail comes first.
        raise RuntimeError("the end of its stderr:\n" + "\n".join(tail) +
                           f"\n{self._name()} {how}: {last.strip()}")

    def _name(self) -> str:
        """The program as errors name it: `python train.py` for `python train.py --lr 0.1`."""
        return shlex.join(self.arguments[:2])

    def _complete_checkpoint(self) -> tuple[int, Path | None]:
        """The newest complete checkpoint the program had written by the last iteration
        step() returned: (the iteration it ends, its copy), or (0, None)."""
        with self.lock:
            done = [number for number in self.snapshots if number <= self.iteration]
            return (max(done), self.snapshots[max(done)]) if done else (0, None)

    def _forget_old_snapshots(self) -> None:
        newest, _ = self._complete_checkpoint()
        with self.lock:
            for number in [n for n in self.snapshots if n < newest]:
                path = self.snapshots.pop(number)
                if path != self.restore_dir:  # the program may still be reading that one
                    shutil.rmtree(path, ignore_errors=True)

    def save(self, directory: Path) -> None:
        number, checkpoint = self._complete_checkpoint()
        if checkpoint is not None:
            shutil.copytree(checkpoint, Path(directory) / "checkpoint")
        state = {"iteration": self.iteration, "checkpoint_iteration": number}
        (Path(directory) / STATE_FILE).write_text(json.dumps(state))

    def restore(self, directory: Path) -> None:
        self._stop()
        state = json.loads((Path(directory) / STATE_FILE).read_text())
        self.iteration = state["iteration"]
        self.first_number = 0
        self.restore_dir = None
        with self.lock:
            self.snapshots = {}
        if (Path(directory) / "checkpoint").is_dir():
            self.restore_dir = self.scratch / "restore"
            shutil.rmtree(self.restore_dir, ignore_errors=True)
            shutil.copytree(Path(directory) / "checkpoint", self.restore_dir)
            self.first_number = state["checkpoint_iteration"]
            with self.lock:
                self.snapshots[self.first_number] = self.restore_dir

    def artifacts(self, directory: Path) -> None:
        for name in ("stdout.log", "stderr.log"):
            if (self.scratch / name).exists():
                shutil.copyfile(self.scratch / name, Path(directory) / name)
        if self.config.reports == "tensorboard":
            for path in TensorBoardReader(self.program_dir).event_files():
                kept = Path(directory) / "tensorboard" / path.relative_to(self.program_dir)
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, kept)

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

