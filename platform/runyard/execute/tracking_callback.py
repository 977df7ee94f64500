"""Tune events → MLflow runs, written by the driver alone (trials never talk to MLflow).

A plain job's single trial writes to the job's run; a sweep's trials are child runs of the
sweep's parent run. Runs are keyed by runyard's trial id (not Tune's), and a driver that
resumes a job starts with the runs that already exist, so a trial that is retried, resumed
or re-run keeps writing to the one run it has.

A population-based sweep's member (execute/population.py) also logs, each step, the
hyperparameters it trained that iteration with, as metrics named after their dimensions
(config.lr), and each time it copies another member, a tag update and `pbt/events.json` (all
its exploits so far, rewritten whole: a resumed driver writes the same file again). A member's
step is the training iteration of the model it carries: after it copies a checkpoint taken at
the donor's iteration c, it goes on at step c + 1.

Metric history is exactly once per step. A trial that goes on from a checkpoint older than
its last report (or from the start, when it had none) reports those iterations again; their
steps are in its run already, and the first value logged for a step is the one kept: MLflow
cannot delete a point, and a replay from a checkpoint recomputes the same iteration. Steps
that a driver which died had not yet written go in from the checkpoint the trial goes on
from: each checkpoint carries the trial's reports since the one before, and a checkpoint is
taken as the trial's newest (Tune records it, so a resume goes on from it) only once every
report up to the one before is in MLflow (`on_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

from ray import tune

from runyard import fsio
from runyard.execute.payload import TrialPayload
from runyard.execute.population import hyperparameter_metrics
from runyard.execute.trainable import (ARTIFACTS_DIR, FINISHED, HYPERPARAMETERS, POINTS, RECORDED,
                                       REPORTED_FILE, STATE_DIR, SYSTEM_METRICS, TRACKED_STEP,
                                       failed_artifacts_location)
from runyard.spec.schema import Distribution
from runyard.tracking.store import JobTracking, flatten
from runyard.tracking.tags import (CONFIG, DRIVER, ERROR, HOST, KIND, PBT_EXPLOITS, PBT_LAST_EXPLOIT,
                                   SAMPLE, SEED, STOPPED_BY, TRIAL_ID)
from runyard.tracking.writer import RunRef


class TrackingCallback(tune.Callback):
    def __init__(self, tracking: JobTracking, parent: RunRef | None, base_tags: dict[str, str],
                 base_params: dict[str, Any],
                 trial_files: Callable[[TrialPayload], dict[str, str]],
                 freeze: Callable[[], str], metric_names: set[str], existing: dict[str, RunRef],
                 time_budget_s: float | None = None,
                 population_space: dict[str, Distribution] | None = None):
        self.tracking = tracking
        self.parent = parent
        self.base_tags = base_tags
        self.base_params = base_params
        self.trial_files = trial_files  # a trial's payload -> {artifact file name: text}
        self.freeze = freeze  # pip freeze of the driver's environment, made on the writer's thread
        self.metric_names = metric_names
        self.runs: dict[str, RunRef] = dict(existing)
        self.logged_through: dict[str, int] = {}  # trial id -> the last step in its run
        # trial id -> the write of its metrics up to its newest checkpoint (on_checkpoint)
        self.checkpoint_flushes: dict[str, futures.Future] = {}
        self.status: dict[str, str] = {}  # final status of trials that ran under this driver
        # Data-parallel trials report their checkpoints as results: a path in the trial's storage.
        self.ddp_checkpoints: dict[str, Any] = {}
        self.time_budget_s = time_budget_s
        self.started = time.monotonic()
        # A population-based sweep's space: its members' hyperparameters change as they train.
        self.population_space = population_space
        self.exploits_logged: dict[str, int] = {}  # trial id -> exploits in its events.json
        self.hosts: dict[str, str] = {}  # trial id -> the node its last result came from

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the live MLflow writer (a
        # thread) stays with this driver, and a resuming driver brings its own callbacks.
        # The runs stay too: Tune pickles them as the Tuner is made, before the writer has
        # made them, and a RunRef pickles as its id (which would wait for it).
        return {**self.__dict__, "tracking": None, "freeze": None, "checkpoint_flushes": {},
                "runs": {}, "parent": None}

    def setup(self, **info: Any) -> None:
        self.started = time.monotonic()  # Tune starts the sweep's time budget now too

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # The store opens while Tune starts (tracking.writer): a job it cannot record stops.
        failed = self.tracking.failed_to_open()
        if failed is not None:
            raise failed

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune's first step has asked Ray for the first trials' processes: the store opens
        # while they start, on the core they leave free.
        self.tracking.open()

    def run_of(self, trial: Any) -> RunRef:
        info = TrialPayload.of(trial.config)
        trial_id = info.trial_id
        if trial_id not in self.runs:
            # CONFIG names the config without its seed: MLflow's "Group by" on it pools a
            # config's seeds (mean and range in the charts); on the seed param or tag, or on
            # a config.* param, it groups by that instead.
            tags = {**self.base_tags, KIND: "trial", TRIAL_ID: trial_id,
                    SEED: str(info.seed), SAMPLE: str(info.sample),
                    CONFIG: info.label.rsplit("seed=", 1)[0].rstrip(",") or "default"}
            params = {**self.base_params, **flatten({"config": info.config}), "seed": info.seed}
            run = self.tracking.start_run(info.label, tags, params, self.parent)
            for file_name, text in self.trial_files(info).items():
                self.tracking.writer.log_text(run, text, file_name)
            self.tracking.writer.log_text(run, self.freeze, "pip-freeze.txt")
            self.runs[trial_id] = run
        return self.runs[trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_id = TrialPayload.of(trial.config).trial_id
        existed = trial_id in self.runs
        run = self.run_of(trial)
        if existed and trial_id not in self.logged_through:
            # A run from an earlier driver: the steps it holds are not logged again, and the
            # ones that driver died before writing are written from the checkpoint.
            # By value: the step is the workload's own where it has one (Iteration.step).
            history = self.tracking.client.get_metric_history(run.id, "training_iteration")
            self.logged_through[trial_id] = max((int(m.value) for m in history), default=0)
            if trial.checkpoint is not None:
                self._write_lost_reports(trial_id, run, trial.checkpoint)
            if self.population_space:
                # Exploits that driver recorded after Tune last saved this member were undone
                # with it: the run says again what the member goes on with.
                self._log_exploits(trial, rewrite=True)
        if existed and self.parent is not None and self.status.get(trial_id) != "RUNNING":
            # Resumed or re-run: the same run again, now written by this driver. (A member of
            # a population-based sweep that Tune paused and starts again is running still.)
            self.tracking.writer.reopen_run(run)
            self.tracking.writer.set_tags(run, {k: v for k, v in self.base_tags.items()
                                                if k.startswith(DRIVER)})
        self.status[trial_id] = "RUNNING"

    def _write_lost_reports(self, trial_id: str, run: RunRef, checkpoint: Any) -> None:
        """Reports up to the checkpoint a trial goes on from that its run lacks: its last
        driver was gone before their batch reached MLflow."""
        filesystem, folder = checkpoint.filesystem, checkpoint.path
        try:
            with filesystem.open_input_stream(posixpath.join(folder, REPORTED_FILE)) as stream:
                reported = json.loads(stream.read())
        except FileNotFoundError:  # a data-parallel trial's checkpoint keeps no reports
            return
        for entry in reported:
            step = int(entry["step"])
            if step > self.logged_through[trial_id]:
                self._log_iteration(run, step, entry["time_total_s"], entry["metrics"], entry)
                self.logged_through[trial_id] = step

    def _log_iteration(self, run: RunRef, iteration: int, time_total_s: float,
                       values: dict[str, float], tracked: dict[str, Any]) -> None:
        """One iteration's metrics at its step (the workload's own, or the iteration's
        number), unless its program logged them itself, and the values it brought to record
        at their own steps. `tracked`: the result (or checkpoint entry) with those keys."""
        step = iteration if tracked.get(TRACKED_STEP) is None else int(tracked[TRACKED_STEP])
        metrics = {} if tracked.get(RECORDED) else \
            {k: v for k, v in values.items() if k in self.metric_names}
        metrics.update(time_total_s=time_total_s, training_iteration=iteration)
        if self.population_space:  # the values a population's member trained with
            metrics.update(hyperparameter_metrics(self.population_space,
                                                  tracked.get(HYPERPARAMETERS, {})))
        self.tracking.writer.log_metrics(run, metrics, step)
        for point_step, point_values in tracked.get(POINTS, ()):
            self.tracking.writer.log_metrics(run, point_values,
                                             step if point_step is None else int(point_step))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        if result.get(FINISHED):
            # The workload ended by itself after its last iteration: only what it reported
            # after that iteration is new.
            if result.get(POINTS):
                run = self.run_of(trial)
                for point_step, point_values in result[POINTS]:
                    if point_step is not None:
                        self.tracking.writer.log_metrics(run, point_values, int(point_step))
            return
        payload = TrialPayload.of(trial.config)
        trial_id = payload.trial_id
        if result.get("checkpoint_path"):
            self.ddp_checkpoints[trial_id] = stored_checkpoint(payload.storage,
                                                               result["checkpoint_path"])
        step = int(result["training_iteration"])
        if step <= self.logged_through.get(trial_id, 0):
            return  # a replayed iteration (see the module's docstring)
        self.logged_through[trial_id] = step
        self._log_iteration(self.run_of(trial), step, result.get("time_total_s", 0.0), result,
                            result)
        host = f"{result.get('hostname')} ({result.get('node_ip')})"
        if self.hosts.get(trial_id) != host:  # its first result, or a retry or resume elsewhere
            self.hosts[trial_id] = host
            self.tracking.writer.set_tags(self.run_of(trial), {HOST: host})
        for sample in result.get(SYSTEM_METRICS, ()):  # taken in the trial, at their own times
            self.tracking.writer.log_metrics(self.run_of(trial), sample.values, sample.index,
                                             timestamp_ms=sample.timestamp_ms)
        if self.population_space:
            # Tune's scheduler saw this result first: an exploit it decided is in the config.
            self._log_exploits(trial)

    def _log_exploits(self, trial: Any, rewrite: bool = False) -> None:
        """The member's exploits that its run does not show yet (`rewrite`: all of them, none
        included, over what its run shows)."""
        payload = TrialPayload.of(trial.config)
        if not rewrite and len(payload.exploits) <= self.exploits_logged.get(payload.trial_id, 0):
            return
        run, last_text = self.run_of(trial), "none"
        if payload.exploits:
            last = payload.exploits[-1]
            changes = ", ".join(f"{key} {_short(last.copied.get(key))} -> {_short(value)}"
                                for key, value in last.after.items())
            last_text = (f"after iteration {last.iteration}: copied {last.donor} at its "
                         f"iteration {last.donor_iteration}; {changes}")
        self.tracking.writer.set_tags(run, {PBT_EXPLOITS: str(len(payload.exploits)),
                                            PBT_LAST_EXPLOIT: last_text})
        events = [dataclasses.asdict(exploit) for exploit in payload.exploits]
        self.tracking.writer.log_text(run, json.dumps(events, indent=1), "pbt/events.json")
        self.exploits_logged[payload.trial_id] = len(payload.exploits)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """Tune calls this before it records the checkpoint as the trial's newest. The
        checkpoint's reports reach back only to the one before, so the reports up to that one
        must be in MLflow first: their write was queued when it was taken, and is waited for
        here (at once, unless the writer is a whole checkpoint interval behind: a slow or
        unreachable server holds the sweep back rather than lose a step)."""
        run = self.run_of(trial)
        trial_id = TrialPayload.of(trial.config).trial_id
        earlier = self.checkpoint_flushes.get(trial_id)
        self.checkpoint_flushes[trial_id] = self.tracking.writer.flush_run(run)
        if earlier is not None:
            futures.wait([earlier])  # a failed write keeps its metrics queued; the writer says so

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.run_of(trial)
        checkpoint = trial.checkpoint
        if checkpoint is None:
            checkpoint = self.ddp_checkpoints.get(TrialPayload.of(trial.config).trial_id)
        if checkpoint is not None:
            path, scratch = local_copy(checkpoint)
            logged = [self.tracking.writer.log_artifacts(run, str(Path(path) / STATE_DIR), "checkpoint")]
            artifacts = Path(path) / ARTIFACTS_DIR
            if artifacts.is_dir():
                logged.append(self.tracking.writer.log_artifacts(run, str(artifacts)))
            if scratch is not None:  # a download from remote storage: gone once it is logged
                logged[-1].add_done_callback(lambda _: shutil.rmtree(scratch, ignore_errors=True))
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.run_of(trial)
        traceback = Path(trial.error_file).read_text() if trial.error_file else "no traceback"
        last_line = next((ln for ln in reversed(traceback.strip().splitlines()) if ln.strip()), "")
        self.tracking.writer.set_tags(run, {ERROR: last_line[:5000]})
        self.tracking.writer.log_text(run, traceback, "error.txt")
        self._log_failed_artifacts(run, TrialPayload.of(trial.config))
        self._end(trial, "FAILED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Retried: the artifacts of the attempt that failed are not the trial's.
        store, inner = fsio.filesystem(failed_artifacts_location(TrialPayload.of(trial.config)))
        store.delete_dir_contents(inner, missing_dir_ok=True)

    def _log_failed_artifacts(self, run: RunRef, payload: TrialPayload) -> None:
        """What the failed trial left in its storage (its program's logs), as the run's
        artifacts; the storage copy goes once they are logged."""
        location = failed_artifacts_location(payload)
        scratch = tempfile.mkdtemp(prefix="runyard-failed-")
        if not fsio.download_folder(location, scratch):
            shutil.rmtree(scratch, ignore_errors=True)
            return
        store, inner = fsio.filesystem(location)
        store.delete_dir(inner)
        logged = self.tracking.writer.log_artifacts(run, scratch)
        logged.add_done_callback(lambda _: shutil.rmtree(scratch, ignore_errors=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """When the sweep's time budget runs out, Tune stops the running trials without a
        completion event. They ended as the spec asked, where they were: FINISHED, with
        their last checkpoint, and a tag that says why they stopped early. (Ctrl-C also
        stops trials this way, before the budget is spent; those are ended KILLED later.)"""
        if self.time_budget_s is None or time.monotonic() - self.started < self.time_budget_s:
            return
        for trial in trials:
            trial_id = TrialPayload.of(trial.config).trial_id
            if self.status.get(trial_id) == "RUNNING" and trial.status == "TERMINATED":
                self.tracking.writer.set_tags(self.run_of(trial),
                                              {STOPPED_BY: "time budget"})
                self.on_trial_complete(0, trials, trial)

    def _end(self, trial: Any, status: str) -> None:
        trial_id = TrialPayload.of(trial.config).trial_id
        self.status[trial_id] = status
        self.tracking.writer.end_run(self.run_of(trial), status)

    def left_unfinished(self) -> bool:
        """Whether a trial this driver started has not ended (its experiment was stopped)."""
        return "RUNNING" in self.status.values()

    def end_unfinished(self, status: str) -> list[str]:
        """End the runs of trials this driver started but did not see end (Ctrl-C, a
        driver error); returns their trial ids."""
        unfinished = [tid for tid, s in self.status.items() if s == "RUNNING"]
        for trial_id in unfinished:
            self.status[trial_id] = status
            self.tracking.writer.end_run(self.runs[trial_id], status)
        return unfinished


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def stored_checkpoint(storage: str, path: str) -> Any:
    """The checkpoint at `path`, as Ray Train reports it (inside the filesystem of the trial's
    `storage`: no scheme, so a bucket's path reads as a local one)."""
    from pyarrow import fs
    from ray.train import Checkpoint

    filesystem, _ = fs.FileSystem.from_uri(storage)
    return Checkpoint(path, filesystem=filesystem)


def local_copy(checkpoint: Any) -> tuple[str, str | None]:
    """A folder on this machine holding a Tune checkpoint (a ray.train.Checkpoint), and the
    scratch folder to delete afterwards: None when the checkpoint is on a local or shared
    path already, the download's folder when it is in a bucket."""
    from pyarrow import fs

    if isinstance(checkpoint.filesystem, fs.LocalFileSystem):
        return checkpoint.path, None
    scratch = tempfile.mkdtemp(prefix="runyard-checkpoint-")
    return checkpoint.to_directory(scratch), scratch
