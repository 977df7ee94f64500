"""Run a planned job on Ray Tune and track it in MLflow — first time, resumed, re-run, extended.

The caller (runyard.api) has already validated the spec, expanded its trials and checked
them against the cluster, so everything here may create runs. From the first line on, the
job has a ledger on disk and an MLflow run, and whatever happens every run it opened ends
FINISHED, FAILED or KILLED. A resumed job re-attaches to the runs it has, so no trial is
ever tracked twice. The Tune side is execute/tune_runner.py, the MLflow side
execute/records.py; this module strings them together.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from runyard import workloads
from runyard.errors import RunFailed, UserError
from runyard.fsio import delete_file, delete_folder
from runyard.execute.adaptive import JudgedConfig, check_restorable, judged_configs
from runyard.execute.ledger import Ledger, Segment
from runyard.execute.metrics import MetricsCallback
from runyard.execute.outcome import JobOutcome
from runyard.execute.payload import TrialTracking
from runyard.execute.planned import load_ledger_spec, new_job_id, planned_trials
from runyard.execute.records import JobRecords
from runyard.execute.storage import Storage
from runyard.execute.tune_runner import SearchSettings, TuneRunner
from runyard.plan import Trial, expand
from runyard.spec import JobSpec
from runyard.tracking.results import config_summaries, trial_results
from runyard.tracking.store import refused_for_credentials


def run_job(spec: JobSpec, trials: list[Trial], tracking_uri: str, workdir: Path,
            console: Console, storage: Storage, job_id: str | None = None,
            spec_path: Path | None = None) -> JobOutcome:
    """Start a new job, its state in `storage`."""
    sweep_id = job_id or new_job_id(spec)
    if storage.exists(storage.ledger_path(sweep_id)):
        raise UserError(f"job {sweep_id!r} exists already; `runyard resume {sweep_id}` "
                        "continues it, or choose another --id")
    ledger = Ledger(sweep_id, spec.as_plain(), tracking_uri, spec.experiment, str(workdir),
                    storage.root, spec_path=str(Path(spec_path).resolve()) if spec_path else "")
    samples = max(t.sample for t in trials) + 1
    segment = Segment(storage.tune_path(sweep_id), first_sample=0, samples=samples)
    return _Driver(spec, ledger, console, new=True).fit_new(segment, trials)


def extend_job(ledger: Ledger, samples: int, console: Console) -> JobOutcome:
    """Add `samples` new configs to a sweep, under the same parent run."""
    if not ledger.is_sweep:
        raise UserError(f"{ledger.sweep_id} is a plain job, not a sweep: nothing to extend")
    spec = load_ledger_spec(ledger)
    if spec.population_based:
        raise UserError(f"{ledger.sweep_id} is population-based: its members have trained "
                        "together, and new ones would start behind them; run a new sweep "
                        "with more samples (population size) or seeds (populations) instead")
    spec = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"samples": samples})})
    first = sum(segment.samples for segment in ledger.segments)
    trials = expand(spec, first_sample=first)
    path = posixpath.join(posixpath.dirname(ledger.segments[-1].tune_path),
                          f"{ledger.sweep_id}-x{first}")
    segment = Segment(path, first_sample=first, samples=max(t.sample for t in trials) + 1 - first)
    driver = _Driver(spec, ledger, console, new=False)
    # A new TPE segment is a new study: it starts from every config judged so far.
    judged = driver.judged_configs() if spec.adaptive else ()
    return driver.fit_new(segment, trials, judged)


def resume_job(ledger: Ledger, console: Console, errored_only: bool = False) -> JobOutcome:
    """Continue every unfinished trial from its last checkpoint (after a driver died), or,
    with `errored_only`, re-run just the trials that failed."""
    spec = load_ledger_spec(ledger)
    if spec.adaptive:  # refused before any run is reopened
        for segment in ledger.segments:
            check_restorable(segment.tune_path)
    return _Driver(spec, ledger, console, new=False).fit_restored(errored_only)


class _Driver:
    """One driver's run of a job: its MLflow records and its Tune experiments, together."""

    def __init__(self, spec: JobSpec, ledger: Ledger, console: Console, new: bool):
        workload_cls = workloads.get(spec.workload)
        # What the workload reports under this config (a command workload declares it there).
        metrics = workload_cls.declared_metrics(workload_cls.Config.model_validate(spec.config))
        self.spec, self.ledger, self.console = spec, ledger, console
        self.settings = SearchSettings.of(spec, metrics)
        self.records = JobRecords(spec, ledger, self.settings, list(metrics))
        self.new = new
        if new:
            self.records.open()
        else:
            self.records.reopen()

    def fit_new(self, segment: Segment, trials: list[Trial],
                judged: Sequence[JudgedConfig] = ()) -> JobOutcome:
        self.ledger.segments.append(segment)
        self.ledger.save()
        runner = self._runner(len(trials))
        return self._fit(runner, [runner.new(segment.tune_path, trials, judged)])

    def fit_restored(self, errored_only: bool) -> JobOutcome:
        runner = self._runner(self.ledger.trial_count(self.spec))
        return self._fit(runner, [runner.restored(segment.tune_path, errored_only)
                                  for segment in self.ledger.segments])

    def judged_configs(self) -> list[JudgedConfig]:
        """Every config of the sweep so far that has a seed mean."""
        settings = self.settings
        results = trial_results(self.records.tracking.client, self.ledger.run_id, settings.metric,
                                settings.scope, settings.mode)
        values = {row.sample: row.value for row in config_summaries(results, settings.mode)}
        return judged_configs(planned_trials(self.ledger), values)

    def _runner(self, trial_count: int) -> TuneRunner:
        self.tracker, self.progress = self.records.callbacks(trial_count, self.console)
        metrics = MetricsCallback(self.spec.experiment, self.records.tracking.writer.backlog)
        tracking = TrialTracking(self.ledger.tracking_uri, self.ledger.run_id,
                                 sweep=self.spec.sweep is not None, job_id=self.ledger.sweep_id,
                                 experiment=self.ledger.experiment)
        return TuneRunner(self.spec, self.settings, Path(self.ledger.workdir),
                          [self.tracker, self.progress, metrics], tracking)

    def _fit(self, runner: TuneRunner, tuners: list) -> JobOutcome:
        try:
            result = runner.fit(tuners, self.tracker.left_unfinished)
        finally:
            self.progress.close()
        self._refuse_untracked()
        ended = self.tracker.end_unfinished("FAILED" if result.error else "KILLED")
        interrupted = result.interrupted or (bool(ended) and result.error is None)
        # Only a time budget leaves trials unstarted.
        planned = self.ledger.trial_count(self.spec) if self.settings.time_budget_s else 0
        outcome = self.records.finish(interrupted, self.tracker, planned, result.error)
        if result.error is not None:
            raise RunFailed(f"the driver failed: {result.error!r}; job {self.ledger.sweep_id} "
                            f"is marked FAILED (traceback: its run's driver-error.txt)") from result.error
        return outcome

    def _refuse_untracked(self) -> None:
        """A new job's store opens while Tune starts its first trials (tracking.writer); if
        it could not be opened, the job stopped there, and nothing of it is kept: not its
        ledger, not its Tune state. A server's refusal (credentials) goes to the caller as
        it is, which says what to set; any other error says which store failed."""
        tracking = self.records.tracking
        error = tracking.failed_to_open(wait=True)
        if error is None:
            return
        tracking.close()
        if self.new:
            for segment in self.ledger.segments:
                delete_folder(segment.tune_path)
            delete_file(self.ledger.path)
        if refused_for_credentials(error, tracking.uri) is not None:
            raise error
        raise UserError(f"the tracking store {tracking.uri} could not be opened ({error}); "
                        "nothing of the job was kept. Repair or move that store, or choose "
                        "another with --tracking-uri or MLFLOW_TRACKING_URI") from error
