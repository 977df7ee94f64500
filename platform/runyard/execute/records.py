"""A job's records in MLflow, kept by its driver: opened, re-attached on resume, and ended.

A plain job is one MLflow run, which its single trial writes into; a sweep is a parent run
with a child run per trial. That difference lives here and in the TrackingCallback (which
writes a trial into its run), nowhere else: to Tune every job is a sweep.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import socket
import tempfile
import threading
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml
from rich.console import Console

from runyard.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from runyard.execute.ledger import FinalResults, Ledger
from runyard.execute.outcome import JobOutcome
from runyard.execute.payload import TrialPayload
from runyard.execute.planned import lineage
from runyard.execute.progress import ProgressCallback
from runyard.execute.storage import SUBMISSION_ENV
from runyard.execute.tracking_callback import TrackingCallback
from runyard.execute.tune_runner import SearchSettings
from runyard.spec import JobSpec, set_dotted
from runyard.tracking import provenance
from runyard.tracking.results import (TrialResult, best_config, config_summaries, population_best,
                                      sweep_description, trial_results)
from runyard.tracking.store import JobTracking, flatten, job_run
from runyard.tracking.tags import (BEST_CONFIG, BEST_RUN_ID, BEST_TRIAL_ID, DRIVER,
                                   DRIVER_STARTED, ERROR, FAILED_TRIALS, GIT_COMMIT, JOB_ID, KIND,
                                   NOT_STARTED, NOTE, RAY_JOB, SAMPLE, SEARCH, SEED, SPEC_HASH,
                                   SPEC_NAME, TRIAL_COUNTS, TRIAL_ID, VERSION, WORKLOAD)
from runyard.tracking.writer import RunRef

PLAIN_TRIAL = "t0000"  # a plain job's one trial


class JobRecords:
    def __init__(self, spec: JobSpec, ledger: Ledger, settings: SearchSettings,
                 metric_names: list[str]):
        self.spec = spec
        self.ledger = ledger
        self.settings = settings
        self.metric_names = metric_names
        self.is_sweep = spec.sweep is not None
        # Opened once Tune has asked for the first trial (TrackingCallback.on_step_end), or
        # at once by whatever needs the store first (reopen, for a job that goes on).
        self.tracking = JobTracking(ledger.tracking_uri, ledger.experiment, open_later=True)
        # Made on the writer's thread, once, when the first run that keeps it is written
        # (reading every installed package's metadata takes ~0.5 s).
        self.freeze = functools.cache(provenance.pip_freeze)
        self.base_tags = {
            SPEC_NAME: spec.name, SPEC_HASH: spec.hash,
            JOB_ID: ledger.sweep_id, WORKLOAD: spec.workload,
            GIT_COMMIT: provenance.git_commit(Path(ledger.workdir)),
            VERSION: provenance.runyard_version(),
            **spec.tracking.tags,
        }
        if self.is_sweep:
            self.base_tags[SEARCH] = spec.sweep.search
        self.base_params = {"workload": spec.workload, **_frame_params(spec)}
        self.job_run: RunRef | None = None
        self.trial_runs: dict[str, RunRef] = {}
        if self.is_sweep:
            # A sweep ends by drawing its plots; matplotlib's import (~0.6 s) is paid now, in
            # the background, while Tune runs, instead of after the last trial.
            threading.Thread(target=importlib.import_module, args=("runyard.tracking.plots",),
                             name="runyard-import-plots", daemon=True).start()

    def driver_tags(self) -> dict[str, str]:
        """Who is writing this job now, so a reconciler can tell when that driver is gone."""
        process = psutil.Process()
        tags = {DRIVER: f"{socket.gethostname()}:{process.pid}",
                DRIVER_STARTED: f"{process.create_time():.3f}"}
        if os.environ.get(SUBMISSION_ENV):  # a cluster job: the laptop judges it by its job
            tags[RAY_JOB] = os.environ[SUBMISSION_ENV]
        return tags

    def open(self) -> None:
        """The job's run, for a job that is new."""
        spec = self.spec
        tags = {**self.base_tags, **self.driver_tags(), KIND: "sweep" if self.is_sweep else "run"}
        params = {**self.base_params, **flatten({"config": spec.config}), "seed": spec.seed}
        if self.is_sweep:
            params["sweep.space"] = "; ".join(f"{k}: {d.kind} {d.args}"
                                              for k, d in spec.sweep.space.items())
        else:
            tags.update({TRIAL_ID: PLAIN_TRIAL, SEED: str(spec.seed), SAMPLE: "0"})
        self.job_run = self.tracking.start_run(spec.name, tags, params)
        writer = self.tracking.writer
        writer.log_text(self.job_run, yaml.safe_dump(spec.as_plain(), sort_keys=False), "spec.yaml")
        writer.log_text(self.job_run, self.freeze, "pip-freeze.txt")
        # The ledger learns its run once the writer has made it, while Tune starts.
        self.job_run.when_made(self._keep_run_id)
        if not self.is_sweep:
            self.trial_runs[PLAIN_TRIAL] = self.job_run

    def _keep_run_id(self, run_id: str) -> None:
        self.ledger.run_id = run_id
        self.ledger.save()

    def reopen(self) -> None:
        """The runs a job has already, for a job that goes on (resume, rerun, extend)."""
        self.ledger.forget_final_results()
        if not self.ledger.run_id:
            # Its first driver died before its ledger learnt the run's id (which the writer
            # makes as Tune starts): the run is found by its job id, or made now.
            found = job_run(self.tracking.client, [self.tracking.experiment_id],
                            self.ledger.sweep_id)
            if found is None:
                self.open()
                return
            self._keep_run_id(found.info.run_id)
        self.job_run = RunRef.of(self.ledger.run_id)
        self.tracking.writer.reopen_run(self.job_run)
        self.tracking.writer.set_tags(self.job_run, self.driver_tags())
        if not self.is_sweep:
            self.trial_runs[PLAIN_TRIAL] = self.job_run
            return
        for result in trial_results(self.tracking.client, self.ledger.run_id, None):
            self.trial_runs[result.trial_id] = RunRef.of(result.run_id)

    def callbacks(self, trial_count: int, console: Console
                  ) -> tuple[TrackingCallback, ProgressCallback]:
        """The Tune callbacks that write the job's trials into their runs and draw the
        progress of `trial_count` trials."""
        spec, settings = self.spec, self.settings
        tracker = TrackingCallback(
            self.tracking, self.job_run if self.is_sweep else None,
            {**self.base_tags, **self.driver_tags()}, self.base_params,
            TrialFiles(spec.as_plain()), self.freeze,
            set(self.metric_names), existing=self.trial_runs, time_budget_s=settings.time_budget_s,
            population_space=spec.sweep.space if spec.population_based else None)
        shown = [settings.metric] + [m for m in self.metric_names if m != settings.metric][:3]
        progress = ProgressCallback(console, spec.name, trial_count, settings.metric,
                                    settings.mode, shown)
        return tracker, progress

    def finish(self, interrupted: bool, tracker: TrackingCallback, planned: int,
               driver_error: Exception | None = None) -> JobOutcome:
        """Read the trials back, mark the best, end the job's run; `planned` is how many
        trials the job has in all (for the count that a time budget left unstarted)."""
        settings, writer = self.settings, self.tracking.writer
        if driver_error is not None:
            text = "".join(traceback.format_exception(driver_error))
            writer.log_text(self.job_run, text, "driver-error.txt")
            writer.set_tags(self.job_run, {ERROR: repr(driver_error)[:5000]})
        writer.flush()  # results are read back from MLflow below
        if self.is_sweep:
            results = trial_results(self.tracking.client, self.ledger.run_id, settings.metric,
                                    settings.scope, settings.mode)
            failed = sorted(r.trial_id for r in results if r.status == "FAILED")
        else:
            results = []
            if tracker.status.get(PLAIN_TRIAL) not in ("FINISHED", "FAILED", "KILLED"):
                # Interrupted before its trial started: the job's run still ends.
                writer.end_run(self.job_run, "KILLED" if interrupted else "FAILED")
                writer.flush()
            status = self.tracking.client.get_run(self.ledger.run_id).info.status
            failed = [PLAIN_TRIAL] if status == "FAILED" else []
        if self.spec.population_based:
            best = population_best(results, settings.mode)
        else:
            best = best_config(results, settings.mode) if self.is_sweep else None
        status = "KILLED" if interrupted else ("FAILED" if failed or driver_error else "FINISHED")
        not_started = 0
        if self.is_sweep:
            finished = sum(result.status == "FINISHED" for result in results)
            tags = {FAILED_TRIALS: ",".join(failed) or "none",
                    TRIAL_COUNTS: f"{finished}/{len(results)}"}
            if settings.time_budget_s is not None and not interrupted:
                not_started = planned - len(results)
                tags[NOT_STARTED] = str(not_started)
            if best is not None:
                tags.update({BEST_TRIAL_ID: best.trial_id, BEST_RUN_ID: best.run_id,
                             BEST_CONFIG: best.label})
                writer.log_metrics(self.job_run, {f"best_{settings.metric}": best.value},
                                   step=len(results))
            tags[NOTE] = sweep_description(self.ledger.sweep_id, self.spec.sweep, results, best)
            writer.set_tags(self.job_run, tags)
            if not self.spec.population_based:  # whose report reads more than its trials' scores
                self.ledger.save_final_results(FinalResults(settings.metric, settings.scope.name,
                                                            results))
            # A population's configs changed as it ran: its picture is its lineage.
            if self.spec.population_based:
                self._log_lineage(results)
            else:
                self._log_plots(results)
            writer.end_run(self.job_run, status)
        self.tracking.close()
        exit_code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if failed else EXIT_OK)
        trial_runs = {trial_id: run.id for trial_id, run in tracker.runs.items()}
        return JobOutcome(status, self.ledger.run_id, self.ledger.sweep_id, trial_runs, failed,
                          metric=settings.metric if self.is_sweep else None, best=best,
                          time_budget_s=settings.time_budget_s, not_started=not_started,
                          exit_code=exit_code, link=run_link(self.tracking, self.ledger.run_id))

    def _log_plots(self, results: list[TrialResult], top: int = 5) -> None:
        """The sweep's pictures (tracking.plots) as artifacts of its parent run, under plots/.
        A picture is a nicety: failing to draw one never fails the sweep."""
        from runyard.tracking.plots import sweep_plots  # imported early by __init__

        sweep, client = self.spec.sweep, self.tracking.client
        try:
            rows = config_summaries(results, sweep.mode)
            curves = {}
            for row in rows[:top]:
                seeds = [r for r in results if r.sample == row.sample and r.status == "FINISHED"]
                curves[row.label] = [  # read already when the sweep's scope needed them
                    list(r.history) if r.history is not None else
                    sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, sweep.metric))
                    for r in seeds]
            space = {key: d.kind for key, d in sweep.space.items()}
            with tempfile.TemporaryDirectory(prefix="runyard-plots-") as folder:
                if sweep_plots(rows, space, sweep.metric, sweep.mode, curves, Path(folder)):
                    self.tracking.writer.log_artifacts(self.job_run, folder, "plots").result()
        except Exception as error:  # noqa: BLE001 — see the docstring
            logging.getLogger(__name__).warning("could not plot the sweep: %s", error)

    def _log_lineage(self, results: list[TrialResult]) -> None:
        """The population's family tree as artifacts of the parent run: pbt/lineage.json
        (every exploit, from the members' configs as Tune saved them) and pbt/lineage.png."""
        from runyard.tracking.plots import lineage_plot

        sweep = self.spec.sweep
        exploits = lineage([segment.tune_path for segment in self.ledger.segments], sweep.seeds)
        members = {r.trial_id: {"run_id": r.run_id, "population": int(r.seed - self.spec.seed),
                                "status": r.status} for r in results}
        document = {"exploits": [asdict(e) for e in exploits], "members": members}
        writer = self.tracking.writer
        writer.log_text(self.job_run, json.dumps(document, indent=1), "pbt/lineage.json")
        colour = next(iter(sweep.space))
        try:
            by_population = sorted(results, key=lambda r: (r.seed, r.trial_id))
            histories = {r.trial_id: [(int(m.step), m.value) for m in
                                      self.tracking.client.get_metric_history(r.run_id, colour)]
                         for r in by_population}
            with tempfile.TemporaryDirectory(prefix="runyard-lineage-") as folder:
                lineage_plot(histories, [(e.member, e.iteration, e.donor, e.donor_iteration)
                                         for e in exploits], colour, Path(folder) / "lineage.png")
                writer.log_artifacts(self.job_run, folder, "pbt").result()
        except Exception as error:  # noqa: BLE001 — a picture never fails the sweep
            logging.getLogger(__name__).warning("could not draw the lineage: %s", error)


@dataclass(frozen=True)
class TrialFiles:
    """The files each trial's run starts with; made when the trial first starts (a TPE
    sweep's configs are not known before). Plain data: Tune pickles it with the callback."""

    spec: dict[str, Any]  # the job's resolved spec

    def __call__(self, payload: TrialPayload) -> dict[str, str]:
        return {"spec.yaml": self.trial_yaml(payload)}

    def trial_yaml(self, payload: TrialPayload) -> str:
        """The spec that reproduces exactly this trial, as a plain job."""
        plain = dict(self.spec)  # set_dotted copies what it changes
        plain.pop("sweep", None)
        for key, value in payload.overrides.items():
            plain = set_dotted(plain, key, value)
        plain["seed"] = payload.seed
        return yaml.safe_dump(plain, sort_keys=False)


def run_link(tracking: JobTracking, run_id: str) -> str | None:
    """The run's page in the MLflow UI of a tracking server (a cluster's), which a job's log
    names; the embedded store has no server (`runyard ui` serves it)."""
    if not tracking.uri.startswith(("http://", "https://")):
        return None
    return f"{tracking.uri.rstrip('/')}/#/experiments/{tracking.experiment_id}/runs/{run_id}"


def _frame_params(spec: JobSpec) -> dict[str, Any]:
    frame = spec.as_plain()
    for key in ("name", "workload", "config", "sweep", "tracking", "description", "seed"):
        frame.pop(key, None)
    return flatten(frame)
