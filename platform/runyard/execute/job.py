"""Run a planned job on Ray Tune and track it in MLflow — first time, resumed, re-run, extended.

The caller (the CLI) has already validated the spec, expanded its trials and checked them
against the cluster, so everything here may create runs. From the first line on, the job has
a ledger on disk and an MLflow run, and whatever happens every run it opened ends FINISHED,
FAILED or KILLED. A resumed job re-attaches to the runs it has, so no trial is ever tracked
twice.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from ray import tune
from rich.console import Console

from runyard import workloads
from runyard.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, RunFailed, UserError
from runyard.execute.ddp import run_ddp_trial
from runyard.execute.ledger import Ledger, Segment
from runyard.execute.metrics import MetricsCallback
from runyard.execute.progress import ProgressCallback
from runyard.execute.tracking_callback import TrackingCallback
from runyard.execute.trainable import WorkloadTrainable
from runyard.plan import Trial, expand, trial_bundles
from runyard.plan.trials import grid_size
from runyard.spec import JobSpec, set_dotted
from runyard.spec.loader import validate_data
from runyard.spec.yamlpos import Origin
from runyard.tracking import provenance
from runyard.tracking.results import TrialResult, best_config, config_summaries, trial_results
from runyard.tracking.results import sweep_description
from runyard.tracking.store import NOTE, JobTracking, flatten
from runyard.tracking.writer import RunRef


@dataclass
class JobOutcome:
    status: str  # FINISHED | FAILED | KILLED
    run_id: str  # the job's run: the single run, or the sweep's parent
    sweep_id: str
    failed_trials: list[str] = field(default_factory=list)
    best: dict[str, Any] | None = None  # for sweeps: see tracking.results.best_config
    not_started: int = 0  # trials the sweep's time budget left unstarted
    exit_code: int = EXIT_OK


def run_job(spec: JobSpec, trials: list[Trial], tracking_uri: str, workdir: Path,
            console: Console, storage_root: Path | None = None, job_id: str | None = None,
            spec_path: Path | None = None) -> JobOutcome:
    """Start a new job."""
    sweep_id = job_id or new_job_id(spec)
    if (Ledger.folder(workdir) / f"{sweep_id}.json").exists():
        raise UserError(f"job {sweep_id!r} exists already; `runyard resume {sweep_id}` "
                        "continues it, or choose another --id")
    ledger = Ledger(sweep_id, spec.as_plain(), tracking_uri, spec.experiment, str(workdir),
                    spec_path=str(Path(spec_path).resolve()) if spec_path else "")
    session = _JobSession(spec, ledger, console)
    session.open()
    storage_root = storage_root or (workdir / ".runyard" / "ray_results")
    samples = max(t.sample for t in trials) + 1
    segment = Segment(str(storage_root / sweep_id), first_sample=0, samples=samples)
    return session.fit_new(segment, trials)


def new_job_id(spec: JobSpec) -> str:
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def extend_job(ledger: Ledger, samples: int, console: Console) -> JobOutcome:
    """Add `samples` new configs to a sweep, under the same parent run."""
    if not ledger.is_sweep:
        raise UserError(f"{ledger.sweep_id} is a plain job, not a sweep: nothing to extend")
    spec = load_ledger_spec(ledger)
    spec = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"samples": samples})})
    first = sum(segment.samples for segment in ledger.segments)
    trials = expand(spec, first_sample=first)
    session = _JobSession(spec, ledger, console)
    session.reopen()
    path = Path(ledger.segments[-1].tune_path).parent / f"{ledger.sweep_id}-x{first}"
    segment = Segment(str(path), first_sample=first, samples=max(t.sample for t in trials) + 1 - first)
    return session.fit_new(segment, trials)


def resume_job(ledger: Ledger, console: Console, errored_only: bool = False) -> JobOutcome:
    """Continue every unfinished trial from its last checkpoint (after a driver died), or,
    with `errored_only`, re-run just the trials that failed."""
    spec = load_ledger_spec(ledger)
    session = _JobSession(spec, ledger, console)
    session.reopen()
    return session.fit_restored(errored_only)


def load_ledger_spec(ledger: Ledger) -> JobSpec:
    return validate_data(dict(ledger.spec), {}, Origin(str(ledger.path)))


def planned_trials(ledger: Ledger) -> list[Trial]:
    """Every trial the job has, across its segments."""
    spec = load_ledger_spec(ledger)
    if spec.sweep is None:
        return expand(spec)
    trials = []
    for segment in ledger.segments:
        sized = spec.model_copy(update={"sweep": spec.sweep.model_copy(
            update={"samples": segment.samples // grid_size(spec)})})
        trials += expand(sized, first_sample=segment.first_sample)
    return trials


class _JobSession:
    """One driver's connection to a job: its MLflow runs, its callbacks, its Tune runs."""

    def __init__(self, spec: JobSpec, ledger: Ledger, console: Console):
        _quiet_tune()
        self.spec = spec
        self.ledger = ledger
        self.console = console
        self.workload_cls = workloads.get(spec.workload)
        self.workdir = Path(ledger.workdir)
        self.tracking = JobTracking(ledger.tracking_uri, ledger.experiment)
        self.freeze = provenance.pip_freeze()
        self.base_tags = {
            "runyard.spec_name": spec.name, "runyard.spec_hash": spec.hash,
            "runyard.sweep_id": ledger.sweep_id, "runyard.workload": spec.workload,
            "runyard.git_commit": provenance.git_commit(self.workdir),
            "runyard.version": provenance.runyard_version(),
            **spec.tracking.tags,
        }
        self.base_params = {"workload": spec.workload, **_frame_params(spec)}
        self.job_run: RunRef | None = None
        self.trial_runs: dict[str, RunRef] = {}
        if spec.sweep is not None:
            # A sweep ends by drawing its plots; matplotlib's import (~0.6 s) is paid now, in
            # the background, while Tune runs, instead of after the last trial.
            threading.Thread(target=importlib.import_module, args=("runyard.tracking.plots",),
                             name="runyard-import-plots", daemon=True).start()

    # ------------------------------------------------------------------------ MLflow runs

    def driver_tags(self) -> dict[str, str]:
        """Who is writing this job now, so a reconciler can tell when that driver is gone."""
        process = psutil.Process()
        return {"runyard.driver": f"{socket.gethostname()}:{process.pid}",
                "runyard.driver_started": f"{process.create_time():.3f}"}

    def open(self) -> None:
        spec = self.spec
        tags = {**self.base_tags, **self.driver_tags(),
                "runyard.kind": "sweep" if spec.sweep else "run"}
        if spec.sweep is None:
            tags.update({"runyard.trial_id": "t0000", "runyard.seed": str(spec.seed),
                         "runyard.sample": "0"})
        params = {**self.base_params, **flatten({"config": spec.config}), "seed": spec.seed}
        if spec.sweep is not None:
            params["sweep.space"] = "; ".join(f"{k}: {d.kind} {d.args}"
                                              for k, d in spec.sweep.space.items())
        self.job_run = self.tracking.start_run(spec.name, tags, params)
        self.tracking.writer.log_text(self.job_run, yaml.safe_dump(spec.as_plain(), sort_keys=False),
                                      "spec.yaml")
        self.tracking.writer.log_text(self.job_run, self.freeze, "pip-freeze.txt")
        self.ledger.run_id = self.job_run.id
        self.ledger.save()
        if spec.sweep is None:
            self.trial_runs["t0000"] = self.job_run

    def reopen(self) -> None:
        self.job_run = RunRef.of(self.ledger.run_id)
        self.tracking.writer.reopen_run(self.job_run)
        self.tracking.writer.set_tags(self.job_run, self.driver_tags())
        if self.spec.sweep is None:
            self.trial_runs["t0000"] = self.job_run
        else:
            for result in trial_results(self.tracking.client, self.ledger.run_id, None):
                self.trial_runs[result.trial_id] = RunRef.of(result.run_id)

    # ------------------------------------------------------------------------------ Tune

    def callbacks(self, trials: list[Trial]) -> tuple[TrackingCallback, ProgressCallback]:
        spec, metrics = self.spec, self.workload_cls.metrics
        trial_files = {t.trial_id: {"spec.yaml": _trial_yaml(spec, t), "pip-freeze.txt": self.freeze}
                       for t in trials}
        tracker = TrackingCallback(
            self.tracking, self.job_run if spec.sweep else None,
            {**self.base_tags, **self.driver_tags()}, self.base_params, trial_files,
            set(metrics), existing=self.trial_runs,
            time_budget_s=spec.sweep.time_budget_s if spec.sweep else None)
        metric = spec.sweep.metric if spec.sweep else next(iter(metrics))
        mode = spec.sweep.mode if spec.sweep else metrics[metric]
        shown = [metric] + [m for m in metrics if m != metric][:3]
        progress = ProgressCallback(self.console, spec.name, len(trials), metric, mode, shown)
        return tracker, progress

    def trainable(self) -> Any:
        bundles = trial_bundles(self.spec)
        if self.spec.resources.workers > 1:
            # Ray Train places the DDP workers itself; the trial holds only its driver bundle.
            return tune.with_resources(run_ddp_trial, tune.PlacementGroupFactory(bundles[:1]))
        return tune.with_resources(WorkloadTrainable, tune.PlacementGroupFactory(bundles))

    def fit_new(self, segment: Segment, trials: list[Trial]) -> JobOutcome:
        self.ledger.segments.append(segment)
        self.ledger.save()
        spec = self.spec
        tracker, progress = self.callbacks(trials)
        path = Path(segment.tune_path)
        tuner = tune.Tuner(
            self.trainable(),
            param_space={"trial": tune.grid_search([_trial_payload(spec, t, self.workdir, path)
                                                    for t in trials])},
            tune_config=tune.TuneConfig(
                num_samples=1,
                max_concurrent_trials=spec.sweep.max_concurrent if spec.sweep else None,
                time_budget_s=spec.sweep.time_budget_s if spec.sweep else None,
                scheduler=_scheduler(spec),
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=path.name,
                storage_path=str(path.parent),
                callbacks=[tracker, progress, *self.extra_callbacks()],
                verbose=0,
                checkpoint_config=self.checkpoint_config(),
                failure_config=tune.FailureConfig(
                    max_failures=spec.sweep.max_failures if spec.sweep else 0),
            ),
        )
        return self._fit([tuner], tracker, progress)

    def checkpoint_config(self) -> tune.CheckpointConfig:
        keep = self.spec.checkpoint.keep
        if self.spec.resources.workers > 1:
            return tune.CheckpointConfig(num_to_keep=keep)  # the DDP loop checkpoints itself
        return tune.CheckpointConfig(num_to_keep=keep, checkpoint_at_end=True,
                                     checkpoint_frequency=self.spec.checkpoint.every)

    def extra_callbacks(self) -> list[Any]:
        return [MetricsCallback(self.spec.experiment, self.tracking.writer.backlog)]

    def fit_restored(self, errored_only: bool) -> JobOutcome:
        trials = planned_trials(self.ledger)
        tracker, progress = self.callbacks(trials)
        tuners = []
        for segment in self.ledger.segments:
            tuner = tune.Tuner.restore(segment.tune_path, self.trainable(),
                                       resume_unfinished=not errored_only,
                                       resume_errored=errored_only)
            # The restored experiment carries the callbacks pickled by the driver that
            # started it; this driver's own take their place (Tune has no public setter).
            tuner._local_tuner.get_run_config().callbacks = [tracker, progress,
                                                             *self.extra_callbacks()]
            tuners.append(tuner)
        return self._fit(tuners, tracker, progress)

    def _fit(self, tuners: list[tune.Tuner], tracker: TrackingCallback,
             progress: ProgressCallback) -> JobOutcome:
        interrupted, driver_error = False, None
        try:
            for tuner in tuners:
                tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        except Exception as error:  # noqa: BLE001 — recorded on the runs, then raised
            driver_error = error
        finally:
            progress.close()
            ended = tracker.end_unfinished("FAILED" if driver_error else "KILLED")
            interrupted = (bool(ended) and driver_error is None) or interrupted
        outcome = self._finish(interrupted, tracker, driver_error)
        if driver_error is not None:
            raise RunFailed(f"the driver failed: {driver_error!r}; job {self.ledger.sweep_id} "
                            f"is marked FAILED (traceback: its run's driver-error.txt)") from driver_error
        return outcome

    def _finish(self, interrupted: bool, tracker: TrackingCallback,
                driver_error: Exception | None = None) -> JobOutcome:
        spec, writer = self.spec, self.tracking.writer
        if driver_error is not None:
            text = "".join(traceback.format_exception(driver_error))
            writer.log_text(self.job_run, text, "driver-error.txt")
            writer.set_tags(self.job_run, {"runyard.error": repr(driver_error)[:5000]})
        writer.flush()  # results are read back from MLflow below
        results = (trial_results(self.tracking.client, self.ledger.run_id, spec.sweep.metric)
                   if spec.sweep else [])
        failed = sorted(r.trial_id for r in results if r.status == "FAILED")
        if spec.sweep is None:
            if tracker.status.get("t0000") not in ("FINISHED", "FAILED", "KILLED"):
                # Interrupted before its trial started: the job's run still ends.
                writer.end_run(self.job_run, "KILLED" if interrupted else "FAILED")
                writer.flush()
            status = self.tracking.client.get_run(self.ledger.run_id).info.status
            failed = ["t0000"] if status == "FAILED" else []
        best = best_config(results, spec.sweep.mode) if spec.sweep else None
        status = "KILLED" if interrupted else ("FAILED" if failed or driver_error else "FINISHED")
        not_started = 0
        if spec.sweep is not None:
            tags = {"runyard.failed_trials": ",".join(failed) or "none"}
            if spec.sweep.time_budget_s is not None and not interrupted:
                not_started = len(planned_trials(self.ledger)) - len(results)
                tags["runyard.not_started"] = str(not_started)
            if best is not None:
                tags.update({"runyard.best_trial_id": best["trial_id"],
                             "runyard.best_run_id": best["run_id"],
                             "runyard.best_config": best["label"]})
                writer.log_metrics(self.job_run, {f"best_{spec.sweep.metric}": best["value"]},
                                   step=len(results))
            tags[NOTE] = sweep_description(self.ledger.sweep_id, spec.sweep, results, best)
            writer.set_tags(self.job_run, tags)
            self._log_plots(results)
            writer.end_run(self.job_run, status)
        self.tracking.close()
        exit_code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)
        return JobOutcome(status, self.ledger.run_id, self.ledger.sweep_id, failed, best,
                          exit_code=exit_code, not_started=not_started)

    def _log_plots(self, results: list[TrialResult], top: int = 5) -> None:
        """The sweep's pictures (tracking.plots) as artifacts of its parent run, under plots/.
        A picture is a nicety: failing to draw one never fails the sweep."""
        from runyard.tracking.plots import sweep_plots  # imported early by __init__

        sweep, client = self.spec.sweep, self.tracking.client
        try:
            rows = config_summaries(results, sweep.mode)
            curves = {}
            for row in rows[:top]:
                seeds = [r for r in results if r.sample == row["sample"] and r.status == "FINISHED"]
                curves[row["label"]] = [
                    sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, sweep.metric))
                    for r in seeds]
            space = {key: d.kind for key, d in sweep.space.items()}
            with tempfile.TemporaryDirectory(prefix="runyard-plots-") as folder:
                if sweep_plots(rows, space, sweep.metric, sweep.mode, curves, Path(folder)):
                    self.tracking.writer.log_artifacts(self.job_run, folder, "plots").result()
        except Exception as error:  # noqa: BLE001 — see the docstring
            logging.getLogger(__name__).warning("could not plot the sweep: %s", error)


def _trial_name(trial: Any) -> str:
    return trial.config["trial"]["trial_id"]


def _quiet_tune() -> None:
    """runyard draws its own progress and keeps results in MLflow: Tune's console tables,
    result files and advice about snapshot frequency would only bury it."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _trial_payload(spec: JobSpec, trial: Trial, workdir: Path, storage: Path) -> dict[str, Any]:
    """Everything a trial process needs, as plain data (it crosses to another process)."""
    return {
        "trial_id": trial.trial_id,
        "index": trial.index,
        "sample": trial.sample,
        "label": trial.label,
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
        "checkpoint_every": spec.checkpoint.every,
        "checkpoint_keep": spec.checkpoint.keep,
        "system_metrics_s": spec.tracking.system_metrics or None,  # seconds between samples
        "storage": str(storage),  # where a data-parallel trial's Ray Train run keeps its state
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


def _scheduler(spec: JobSpec) -> Any:
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
