"""Run a planned job on Ray Tune and track it in MLflow.

The caller (the CLI) has already validated the spec, expanded its trials and checked them
against the cluster, so everything here may create runs: from this point on, whatever
happens, every run this job opened ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ray import tune
from rich.console import Console

from runyard.errors import EXIT_FAILED, EXIT_OK
from runyard.execute.progress import ProgressCallback
from runyard.execute.tracking_callback import TrackingCallback
from runyard.execute.trainable import WorkloadTrainable
from runyard.plan import Trial, trial_bundles
from runyard.spec import JobSpec, set_dotted
from runyard.tracking import provenance
from runyard.tracking.store import JobTracking, flatten
from runyard import workloads

EXIT_INTERRUPTED = 130


@dataclass
class JobOutcome:
    status: str  # FINISHED | FAILED | KILLED
    run_id: str  # the job's run: the single run, or the sweep's parent
    sweep_id: str
    failed_trials: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"trial_id", "value", "config", "run_id"} for sweeps
    exit_code: int = EXIT_OK


def run_job(spec: JobSpec, trials: list[Trial], tracking_uri: str, workdir: Path,
            console: Console, storage_root: Path | None = None) -> JobOutcome:
    _quiet_tune()
    workload_cls = workloads.get(spec.workload)
    sweep_id = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_root = storage_root or (workdir / ".runyard" / "ray_results")

    tracking = JobTracking(tracking_uri, spec.experiment)
    base_tags = {
        "runyard.spec_name": spec.name, "runyard.spec_hash": spec.hash,
        "runyard.sweep_id": sweep_id, "runyard.workload": spec.workload,
        "runyard.git_commit": provenance.git_commit(workdir),
        "runyard.version": provenance.runyard_version(),
        "runyard.driver": f"{socket.gethostname()}:{os.getpid()}",
        **spec.tracking.tags,
    }
    base_params = {"workload": spec.workload, **_frame_params(spec)}
    freeze = provenance.pip_freeze()
    spec_yaml = yaml.safe_dump(spec.as_plain(), sort_keys=False)

    parent = None
    if spec.sweep is not None:
        parent = tracking.start_run(spec.name, {**base_tags, "runyard.kind": "sweep"},
                                    {**base_params, **flatten({"config": spec.config}),
                                     "sweep.space": _space_text(spec), "seed": spec.seed})
        tracking.writer.log_text(parent, spec_yaml, "spec.yaml")
        tracking.writer.log_text(parent, freeze, "pip-freeze.txt")

    trial_files = {t.trial_id: {"spec.yaml": _trial_yaml(spec, t), "pip-freeze.txt": freeze}
                   for t in trials}
    metric_names = set(workload_cls.metrics)
    tracker = TrackingCallback(tracking, parent, base_tags, base_params, trial_files, metric_names)
    metric = spec.sweep.metric if spec.sweep else _default_metric(workload_cls.metrics)
    mode = spec.sweep.mode if spec.sweep else workload_cls.metrics[metric]
    shown = [metric] + [m for m in workload_cls.metrics if m != metric][:3]
    progress = ProgressCallback(console, spec.name, len(trials), metric, mode, shown)

    tuner = tune.Tuner(
        tune.with_resources(WorkloadTrainable, tune.PlacementGroupFactory(trial_bundles(spec))),
        param_space={"trial": tune.grid_search([_trial_payload(spec, t, workdir) for t in trials])},
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=spec.sweep.max_concurrent if spec.sweep else None,
            scheduler=_scheduler(spec),
            reuse_actors=True,
            trial_name_creator=lambda trial: trial.config["trial"]["trial_id"],
            trial_dirname_creator=lambda trial: trial.config["trial"]["trial_id"],
        ),
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=str(storage_root),
            callbacks=[tracker, progress],
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=spec.checkpoint.keep,
                checkpoint_frequency=spec.checkpoint.every,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(
                max_failures=spec.sweep.max_failures if spec.sweep else 0),
        ),
    )

    interrupted = False
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
        killed = tracker.end_unfinished("KILLED")
        interrupted = interrupted or bool(killed)

    failed = sorted(tid for tid, status in tracker.status.items() if status == "FAILED")
    best = _best_trial(trials, tracker, metric, mode) if spec.sweep else None
    status = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
    if parent is not None:
        _record_sweep(tracking, parent, best, metric, status, failed)
    tracking.close()
    run_id = parent.id if parent is not None else tracker.runs[trials[0].trial_id].id
    exit_code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)
    return JobOutcome(status, run_id, sweep_id, failed, best, exit_code)


def _quiet_tune() -> None:
    """runyard draws its own progress and keeps results in MLflow: Tune's console tables,
    result files and advice about snapshot frequency would only bury it."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _trial_payload(spec: JobSpec, trial: Trial, workdir: Path) -> dict[str, Any]:
    """Everything a trial process needs, as plain data (it crosses to another process)."""
    return {
        "trial_id": trial.trial_id,
        "index": trial.index,
        "label": trial.label,
        "name": spec.name,
        "seed": trial.seed,
        "workload": spec.workload,
        "config": trial.config,
        "env": spec.env.model_dump(mode="json") if spec.env else None,
        "data": dict(spec.data) if spec.data else None,
        "rollout": spec.rollout.model_dump(mode="json") if spec.rollout else None,
        "resources": spec.resources.model_dump(mode="json"),
        "stop": {"iterations": spec.stop.iterations, "time_s": spec.stop.time_s,
                 "thresholds": spec.stop.thresholds},
        "workdir": str(workdir),
    }


def _trial_yaml(spec: JobSpec, trial: Trial) -> str:
    """The spec that reproduces exactly this trial, as a plain job."""
    plain = spec.as_plain()
    plain.pop("sweep", None)
    for key, value in trial.overrides.items():
        plain = set_dotted(plain, key, value)
    plain["seed"] = trial.seed
    return yaml.safe_dump(plain, sort_keys=False)


def _frame_params(spec: JobSpec) -> dict[str, Any]:
    frame = spec.as_plain()
    for key in ("name", "workload", "config", "sweep", "tracking", "description", "seed"):
        frame.pop(key, None)
    return flatten(frame)


def _space_text(spec: JobSpec) -> str:
    return "; ".join(f"{key}: {dist.kind} {dist.args}" for key, dist in spec.sweep.space.items())


def _default_metric(metrics: dict[str, str]) -> str:
    return next(iter(metrics))


def _scheduler(spec: JobSpec) -> Any:
    if spec.sweep is None or spec.sweep.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    sweep = spec.sweep
    if sweep.scheduler.asha is not None:
        asha = sweep.scheduler.asha
        return ASHAScheduler(time_attr="training_iteration", metric=sweep.metric, mode=sweep.mode,
                             grace_period=asha.grace, max_t=asha.max_t,
                             reduction_factor=asha.reduction_factor)
    return MedianStoppingRule(time_attr="training_iteration", metric=sweep.metric,
                              mode=sweep.mode, grace_period=sweep.scheduler.median.grace)


def _best_trial(trials: list[Trial], tracker: TrackingCallback, metric: str,
                mode: str) -> dict[str, Any] | None:
    """The best config by the mean over its seeds of each trial's last reported metric."""
    by_sample: dict[int, list[float]] = {}
    for trial in trials:
        result = tracker.last_results.get(trial.trial_id)
        if result is not None and metric in result and tracker.status.get(trial.trial_id) == "FINISHED":
            by_sample.setdefault(trial.sample, []).append(result[metric])
    if not by_sample:
        return None
    pick = max if mode == "max" else min
    sample = pick(by_sample, key=lambda s: statistics.fmean(by_sample[s]))
    first = next(t for t in trials if t.sample == sample)
    values = by_sample[sample]
    return {
        "trial_id": first.trial_id,
        "run_id": tracker.runs[first.trial_id].id,
        "value": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seeds": len(values),
        "overrides": first.overrides,
        "label": first.label,
    }


def _record_sweep(tracking: JobTracking, parent: Any, best: dict[str, Any] | None, metric: str,
                  status: str, failed: list[str]) -> None:
    tags = {"runyard.failed_trials": ",".join(failed) or "none"}
    if best is not None:
        tags.update({"runyard.best_trial_id": best["trial_id"],
                     "runyard.best_run_id": best["run_id"],
                     "runyard.best_config": best["label"]})
        tracking.writer.log_metrics(parent, {f"best_{metric}": best["value"]}, step=0)
    tracking.writer.set_tags(parent, tags)
    tracking.writer.end_run(parent, status)
