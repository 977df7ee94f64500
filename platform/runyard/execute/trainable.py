"""A workload as a Ray Tune trainable: the only place where workloads meet Tune.

Tune calls setup/step/save_checkpoint/load_checkpoint; this class forwards them to the
workload. It also decides when the trial is done (the spec's stop conditions), so that the
workload can render its end-of-trial artifacts into the final checkpoint, which the driver
then logs to MLflow. With `reuse_actors`, Tune hands a finished trial's process the next
trial through `reset_config`, so short trials do not pay for a process start each.
"""

from __future__ import annotations

import functools
import json
import posixpath
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from runyard import fsio, workloads
from runyard.execute.payload import TrialPayload
from runyard.execute.system_metrics import SystemSampler
from runyard.workloads.base import (Direction, Iteration, Workload, WorkloadContext,
                                    WorkloadFinished)

STATE_DIR, ARTIFACTS_DIR = "state", "artifacts"
# In each checkpoint: what the trial reported since the one before, so that a driver that died
# before writing those reports to MLflow can still write them (execute/tracking_callback.py).
REPORTED_FILE = "reported.json"
# The key of the result that ends a trial whose workload finished by itself: it is no
# iteration, so the callbacks record nothing for it.
FINISHED = "runyard_finished"
SYSTEM_METRICS = "system_metrics"  # result key: the SystemSamples taken since the last result
# Result key: the swept values the iteration ran with (dotted keys). A population-based
# sweep changes them between iterations, and Tune hands its callbacks a result after the
# scheduler may have given the trial a new config: the result says what it trained with.
HYPERPARAMETERS = "hyperparameters"
# Result keys of an iteration whose workload gave it a step of its own (Iteration.step: the
# MLflow step of its metrics), and of values to record at their own steps (Iteration.points).
TRACKED_STEP = "runyard_step"
POINTS = "runyard_points"
RECORDED = "runyard_recorded"  # the metrics are in the run already (Iteration.recorded)
# Where a trial that failed leaves its end-of-trial artifacts (a program's stdout.log and
# stderr.log) in its storage, for the driver to put in its run: a failed trial has no
# checkpoint to carry them.
FAILED_ARTIFACTS_DIR = "failed-trial-artifacts"


def failed_artifacts_location(trial: TrialPayload) -> str:
    return posixpath.join(trial.storage, FAILED_ARTIFACTS_DIR, trial.trial_id)


def metric_directions(trial: TrialPayload) -> dict[str, Direction]:
    """The metrics the trial's workload reports under its config, with their directions."""
    cls = workloads.get(trial.workload, project_dir=trial.workdir)
    return cls.declared_metrics(cls.Config.model_validate(trial.config))


def build_workload(trial: TrialPayload, parallel: dict[str, Any]) -> Workload:
    """The trial's workload, set up, in this process. A workload given as an import path is
    looked up in the job's project directory first, as the driver did."""
    cls = workloads.get(trial.workload, project_dir=trial.workdir)
    if "torch" in sys.modules:
        # Concurrent trials each get their share of the cores, not all of them each.
        sys.modules["torch"].set_num_threads(max(1, int(trial.resources.cpus_per_trial)))
    workload = cls()
    context = WorkloadContext(
        seed=trial.seed, env=trial.env, data=trial.data, rollout=trial.rollout,
        resources=trial.resources, environment=trial.environment, workdir=Path(trial.workdir),
        parallel=parallel,
    )
    workload.setup(cls.Config.model_validate(trial.config), context)
    return workload


class WorkloadTrainable(tune.Trainable):
    def setup(self, config: dict[str, Any]) -> None:
        self._build(TrialPayload.of(config))

    def _build(self, trial: TrialPayload) -> None:
        self.trial = trial
        self.directions = metric_directions(trial)
        self.workload = build_workload(trial, _parallel_factories(trial))
        # Made when the workload renders its end-of-trial artifacts: a trial killed before
        # that (a lost node, a SIGKILL) never runs cleanup, and would leave an empty folder.
        self.artifacts_dir: Path | None = None
        self.reported: list[dict[str, Any]] = []  # since the last checkpoint
        self.sampler = SystemSampler(trial.system_metrics_s) if trial.system_metrics_s else None

    def step(self) -> dict[str, Any]:
        started = time.time()
        try:
            reported = self.workload.step()
        except WorkloadFinished as finished:
            self._render_artifacts()
            return {"done": True, FINISHED: True, POINTS: _points(finished.points)}
        except Exception:
            self._keep_failed_artifacts()
            raise
        if not isinstance(reported, Iteration):
            reported = Iteration(reported)
        metrics = {name: float(value) for name, value in reported.metrics.items()}
        iteration = self.iteration + 1
        elapsed = self._time_total + (time.time() - started)
        done = self.trial.stop.reached(self.directions, iteration, elapsed, metrics)
        if done:
            self._render_artifacts()
        swept = {HYPERPARAMETERS: dict(self.trial.overrides)} if self.trial.overrides else {}
        tracked = {TRACKED_STEP: reported.step} if reported.step is not None else {}
        tracked |= {POINTS: _points(reported.points)} if reported.points else {}
        tracked |= {RECORDED: True} if reported.recorded else {}
        self.reported.append({"step": iteration, "time_total_s": elapsed, "metrics": metrics,
                              **tracked, **swept})
        samples = {SYSTEM_METRICS: self.sampler.drain()} if self.sampler else {}
        return {**metrics, **tracked, **samples, **swept, "done": done}

    def _render_artifacts(self) -> Path:
        """The workload's end-of-trial artifacts, in a temporary folder of the trial's."""
        if self.artifacts_dir is None:
            self.artifacts_dir = Path(tempfile.mkdtemp(prefix="runyard-artifacts-"))
        self.workload.artifacts(self.artifacts_dir)
        return self.artifacts_dir

    def _keep_failed_artifacts(self) -> None:
        """The workload's artifacts, into the trial's storage, where the driver finds them
        when it hears of the failure. Best effort: the error itself is what matters."""
        try:
            rendered = self._render_artifacts()
            if any(rendered.iterdir()):
                fsio.upload_folder(str(rendered), failed_artifacts_location(self.trial))
        except Exception as error:  # noqa: BLE001 - reported, and the trial's own error wins
            print(f"runyard: could not keep the failed trial's artifacts: {error}",
                  file=sys.stderr)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = Path(checkpoint_dir) / STATE_DIR
        state.mkdir()
        self.workload.save(state)
        (Path(checkpoint_dir) / REPORTED_FILE).write_text(json.dumps(self.reported))
        self.reported = []
        if self.artifacts_dir is not None and any(self.artifacts_dir.iterdir()):
            shutil.copytree(self.artifacts_dir, Path(checkpoint_dir) / ARTIFACTS_DIR)

    def load_checkpoint(self, checkpoint: str) -> None:
        self.workload.restore(Path(checkpoint) / STATE_DIR)
        self.reported = []

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.cleanup()
        self._build(TrialPayload.of(new_config))
        return True

    def cleanup(self) -> None:
        if self.sampler:
            self.sampler.stop()
        self.workload.close()
        if self.artifacts_dir is not None:
            shutil.rmtree(self.artifacts_dir, ignore_errors=True)


def _points(points: tuple[tuple[int | None, dict[str, float]], ...]) -> list[list]:
    """Iteration.points as plain data, which Tune's results and the checkpoint's JSON keep."""
    return [[step, {name: float(value) for name, value in values.items()}]
            for step, values in points]


def _parallel_factories(trial: TrialPayload) -> dict[str, Any]:
    """Parallel resources the executor offers this trial: Ray rollout actors for RL, placed
    in the bundles the trial's placement group reserved for them (plan.trial_bundles); the
    trial's MLflow run, for a program that logs to it itself."""
    factories: dict[str, Any] = {}
    if trial.tracking is not None:
        factories["mlflow_run"] = functools.partial(_trial_run, trial)
    if trial.rollout is not None and trial.rollout.backend == "ray":
        # Imported here: the pool brings torch, which trials without rollouts never need.
        from runyard.execute.rollout_pool import RayRolloutPool
        from runyard.workloads.rl.layout import resolve_layout

        layout = resolve_layout(trial.rollout, trial.resources.cpus_per_trial)
        factories["rollout_pool"] = functools.partial(
            RayRolloutPool, num_cpus_per_actor=layout.cpus_per_worker)
    return factories


def _trial_run(trial: TrialPayload) -> Any:
    # Imported when a workload asks for the run: only then does the trial process load MLflow.
    from runyard.execute.trial_run import TrialRunLink

    return TrialRunLink.find(trial)
