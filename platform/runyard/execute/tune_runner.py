"""A job's trials as Ray Tune experiments: built new, restored, and fitted to the end.

Every job is a sweep to Tune: a plain job is a sweep of one trial, with the workload's first
metric as its objective, no retries and no scheduler (`SearchSettings.of`). What the job's
MLflow records look like is decided elsewhere (execute/records.py); here nothing is tracked.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from runyard.execute.adaptive import JudgedConfig, ProposedTrials
from runyard.execute.payload import CONFIG_KEY, StopConditions, TrialPayload, TrialTracking
from runyard.execute.trainable import WorkloadTrainable
from runyard.ray_compat import (callbacks_counted_without_integrations,
                                grid_values_copied_once, replace_callbacks)
from runyard.processes import ctrl_c_kept
from runyard.plan import Trial, trial_bundles
from runyard.scope import LAST, Scope
from runyard.spec import JobSpec


@dataclass(frozen=True)
class SearchSettings:
    """How Tune runs the job's trials; a plain job gets a one-trial sweep's."""

    metric: str
    mode: str  # max | min
    max_concurrent: int | None
    max_failures: int  # retries of a failed trial, from its last checkpoint
    time_budget_s: float | None
    scope: Scope = LAST  # which of a trial's reports of `metric` score it

    @classmethod
    def of(cls, spec: JobSpec, metrics: dict[str, str]) -> SearchSettings:
        sweep = spec.sweep
        if sweep is None:
            metric = next(iter(metrics))
            return cls(metric, metrics[metric], None, 0, None)
        return cls(sweep.metric, sweep.mode, sweep.max_concurrent, sweep.max_failures,
                   sweep.time_budget_s, sweep.objective_scope)


@dataclass
class FitResult:
    interrupted: bool  # Ctrl-C or SIGTERM reached the driver
    error: Exception | None  # the driver itself failed (not a trial)


class TuneRunner:
    def __init__(self, spec: JobSpec, settings: SearchSettings, workdir: Path,
                 callbacks: list[Any], tracking: TrialTracking | None = None):
        _quiet_tune()
        grid_values_copied_once()  # a sweep's trials are one grid: see ray_compat
        callbacks_counted_without_integrations()  # MLflow stays off the driver's path
        self.spec = spec
        self.settings = settings
        self.workdir = workdir
        self.callbacks = callbacks
        self.tracking = tracking

    def new(self, tune_path: str, trials: list[Trial],
            judged: Sequence[JudgedConfig] = ()) -> tune.Tuner:
        """A Tune experiment at `tune_path` running `trials`: exactly those (a grid over their
        payloads: runyard draws random and grid configs itself, so they never depend on
        Tune's RNG), or for a TPE sweep as many, their configs proposed while it runs, by a
        searcher told the `judged` configs of the sweep's earlier segments."""
        spec, settings = self.spec, self.settings
        # A string throughout: Path() would fold a bucket's "s3://" into "s3:/".
        if spec.adaptive:
            payload_of = functools.partial(trial_payload, spec, workdir=self.workdir,
                                           storage=tune_path, tracking=self.tracking)
            search = dict(search_alg=ProposedTrials(spec, trials[0].sample, payload_of, judged),
                          num_samples=len(trials))
            param_space = {}
        else:
            payloads = [trial_payload(spec, t, self.workdir, tune_path, self.tracking
                                      ).as_config()[CONFIG_KEY] for t in trials]
            search = dict(num_samples=1)
            param_space = {CONFIG_KEY: tune.grid_search(payloads)}
        return tune.Tuner(
            self.trainable(),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                **search,
                max_concurrent_trials=settings.max_concurrent,
                time_budget_s=settings.time_budget_s,
                scheduler=_scheduler(spec),
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=posixpath.basename(tune_path),
                storage_path=posixpath.dirname(tune_path),
                callbacks=self.callbacks,
                verbose=0,
                checkpoint_config=self.checkpoint_config(),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            ),
        )

    def restored(self, tune_path: str, errored_only: bool) -> tune.Tuner:
        """The experiment at `tune_path` again: its unfinished trials from their last
        checkpoints, or (`errored_only`) just the ones that failed."""
        tuner = tune.Tuner.restore(tune_path, self.trainable(), resume_unfinished=not errored_only,
                                   resume_errored=errored_only)
        replace_callbacks(tuner, self.callbacks)
        return tuner

    def fit(self, tuners: list[tune.Tuner], left_unfinished: Callable[[], bool]) -> FitResult:
        """Run the experiments one after the other until each ends or the driver is stopped.
        Ctrl-C or SIGTERM inside a Tune run ends it gracefully (Tune writes its state one last
        time and returns), which `left_unfinished` tells apart from an experiment that ended."""
        try:
            for tuner in tuners:
                with ctrl_c_kept():
                    tuner.fit()
                if left_unfinished():
                    return FitResult(interrupted=True, error=None)
        except KeyboardInterrupt:
            return FitResult(interrupted=True, error=None)
        except Exception as error:  # noqa: BLE001 — the caller records it on the runs and raises it
            return FitResult(interrupted=False, error=error)
        return FitResult(interrupted=False, error=None)

    def trainable(self) -> Any:
        bundles = trial_bundles(self.spec)
        if self.spec.resources.workers > 1:
            # Ray Train places the DDP workers itself; the trial holds only its driver bundle.
            # Imported here: Ray Train and torch cost a driver ~1.2 s that no other trial needs.
            from runyard.execute.ddp import run_ddp_trial

            return tune.with_resources(run_ddp_trial, tune.PlacementGroupFactory(bundles[:1]))
        return tune.with_resources(WorkloadTrainable, tune.PlacementGroupFactory(bundles))

    def checkpoint_config(self) -> tune.CheckpointConfig:
        keep = self.spec.checkpoint.keep
        if self.spec.resources.workers > 1:
            return tune.CheckpointConfig(num_to_keep=keep)  # the DDP loop checkpoints itself
        return tune.CheckpointConfig(num_to_keep=keep, checkpoint_at_end=True,
                                     checkpoint_frequency=self.spec.checkpoint.every)


def trial_payload(spec: JobSpec, trial: Trial, workdir: Path, storage: str,
                  tracking: TrialTracking | None = None) -> TrialPayload:
    """Everything a trial process needs (it crosses to another process)."""
    return TrialPayload(
        trial_id=trial.trial_id, index=trial.index, sample=trial.sample, label=trial.label,
        seed=trial.seed, workload=spec.workload, config=trial.config,
        env=spec.env, data=spec.data, rollout=spec.rollout, resources=spec.resources,
        environment=spec.environment, tracking=tracking,
        stop=StopConditions(spec.stop.iterations, spec.stop.time_s, dict(spec.stop.thresholds)),
        workdir=str(workdir), checkpoint_every=spec.checkpoint.every,
        checkpoint_keep=spec.checkpoint.keep, storage=storage,
        system_metrics_s=spec.tracking.system_metrics or None, overrides=dict(trial.overrides))


def _trial_name(trial: Any) -> str:
    return TrialPayload.of(trial.config).trial_id


def _quiet_tune() -> None:
    """runyard draws its own progress and keeps results in MLflow: Tune's console tables,
    result files and advice about snapshot frequency would only bury it."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A failed trial's traceback (~35 lines of Ray frames) goes to its run's error.txt; the
    # terminal gets its cause in a few lines (progress.py).
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # "Trials did not complete: [...]": the job's outcome names its failed trials already.
    logging.getLogger("ray.tune.tune").addFilter(
        lambda record: not record.getMessage().startswith("Trials did not complete"))


def _scheduler(spec: JobSpec) -> Any:
    if spec.population_based:
        from runyard.execute.population import Populations

        return Populations(spec)
    if spec.sweep is None or spec.sweep.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    from runyard.execute.schedulers import SeedMeanScheduler

    sweep = spec.sweep
    max_t = None
    if sweep.scheduler.asha is not None:
        asha = sweep.scheduler.asha
        max_t = asha.max_t
        rule = ASHAScheduler(time_attr="training_iteration", metric=sweep.metric, mode=sweep.mode,
                             grace_period=asha.grace, max_t=asha.max_t,
                             reduction_factor=asha.reduction_factor)
    else:
        rule = MedianStoppingRule(time_attr="training_iteration", metric=sweep.metric,
                                  mode=sweep.mode, grace_period=sweep.scheduler.median.grace)
    if sweep.seeds > 1:  # judge each config by its seed mean, and stop its seeds together
        return SeedMeanScheduler(rule, sweep.seeds, sweep.metric, sweep.mode, max_t=max_t)
    return rule
