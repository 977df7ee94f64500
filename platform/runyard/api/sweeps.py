"""Reading finished jobs back: best, compare, promote."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runyard.api.jobs import find_job
from runyard.errors import UserError
from runyard.scope import LAST, Scope
from runyard.spec import JobSpec, load_spec

if TYPE_CHECKING:
    from runyard.execute.ledger import Ledger
    from runyard.tracking.results import (Comparison, ConfigSummary, PopulationRow, ScheduleSpan,
                                          Sensitivity)


@dataclass(frozen=True)
class SweepReport:
    """A job's configs ranked by their seed mean of `metric`, best first. A population-based
    sweep has one row, its objective (the mean over populations of each one's best member),
    and says more in `populations` and `schedule`."""

    job_id: str
    run_id: str
    spec: JobSpec
    metric: str
    mode: str  # max | min
    scope: Scope  # which of a trial's reports score it
    rows: list[ConfigSummary]
    sensitivity: list[Sensitivity]  # per swept parameter, strongest first
    populations: list[PopulationRow] = field(default_factory=list)  # best population first
    # The best member's hyperparameters by iteration ranges (dotted key -> value as in the spec)
    schedule: list[ScheduleSpan] = field(default_factory=list)

    @property
    def best(self) -> ConfigSummary | None:
        return self.rows[0] if self.rows else None


@dataclass(frozen=True)
class BestTrial:
    """The trial that a sweep's best config ran as: enough to run it again. (A
    population-based sweep's best member: its config as it ended, and how it got there.)"""

    trial_id: str
    seed: int
    config: dict[str, Any]  # the workload's full config, swept values filled in
    summary: ConfigSummary
    scope: Scope  # which of a trial's reports scored it
    schedule: list[ScheduleSpan] = field(default_factory=list)


@dataclass(frozen=True)
class Promoted:
    path: Path
    metric: str
    best: ConfigSummary
    scope: Scope  # which of a trial's reports scored it


def best(job: str, metric: str | None = None, storage: str | None = None,
         scope: str | None = None) -> SweepReport:
    """The job's configs by their mean over seeds of each trial's score on `metric` (default:
    the sweep's), with which hyperparameters matter. A trial's score is its reports summed up
    by `scope` (last, all, last-N-avg; default: the sweep's). `storage`: where the job's
    ledger is (as for `run`; default RUNYARD_STORAGE, else .runyard/ here)."""
    try:
        chosen = None if scope is None else Scope.parse(scope)
    except ValueError as error:
        raise UserError(f"--scope: {error}") from None
    return _ranked(find_job(job, storage), metric, chosen)


def _ranked(ledger: Ledger, metric: str | None, scope: Scope | None = None) -> SweepReport:
    from runyard.execute.planned import load_ledger_spec
    from runyard.tracking.results import config_summaries, sensitivity

    spec = load_ledger_spec(ledger)
    final = ledger.final_results() if spec.sweep is not None else None
    if final is not None and metric in (None, final.metric) and \
            (scope is None or scope.name == final.scope):
        # A sweep whose driver has ended: ranked from the scores it saved, without MLflow.
        metric, mode, scope = final.metric, spec.sweep.mode, Scope.parse(final.scope)
        rows = config_summaries(final.results, mode)
    else:
        from runyard import workloads
        from runyard.tracking.reconcile import reconcile
        from runyard.tracking.results import trial_results
        from runyard.tracking.store import client_for

        workload_cls = workloads.get(spec.workload)
        metrics = workload_cls.declared_metrics(workload_cls.Config.model_validate(spec.config))
        metric = metric or (spec.sweep.metric if spec.sweep else next(iter(metrics)))
        if metric not in metrics:
            raise UserError(f"{spec.workload} does not report {metric!r}; it reports: "
                            f"{', '.join(sorted(metrics))}")
        mode = spec.sweep.mode if spec.sweep and metric == spec.sweep.metric else metrics[metric]
        scope = scope or (spec.sweep.objective_scope if spec.sweep else LAST)
        client = client_for(ledger.tracking_uri)
        reconcile(client)
        if spec.sweep is None:
            from runyard.tracking.results import ConfigSummary

            run = client.get_run(ledger.run_id)
            value = run.data.metrics.get(metric)
            rows = [] if value is None else [ConfigSummary(
                sample=0, trial_id="t0000", run_id=ledger.run_id, trial_ids=("t0000",),
                label=spec.name, value=value, std=0.0, ci=(value, value), seeds=1, values=[value],
                params=run.data.params)]
        elif spec.population_based:
            return _population_report(ledger, spec, client, metric, mode, scope)
        else:
            rows = config_summaries(trial_results(client, ledger.run_id, metric, scope, mode), mode)
    ranked = sensitivity(rows, list(spec.sweep.space)) \
        if spec.sweep is not None and len(rows) >= 3 else []
    return SweepReport(ledger.sweep_id, ledger.run_id, spec, metric, mode, scope, rows, ranked)


def _population_report(ledger: Ledger, spec: JobSpec, client: Any, metric: str,
                       mode: str, scope: Scope) -> SweepReport:
    from runyard.tracking.results import (member_schedule, population_best, population_rows,
                                          trial_results)

    results = trial_results(client, ledger.run_id, metric)
    best_row = population_best(results, mode)
    if best_row is None:
        return SweepReport(ledger.sweep_id, ledger.run_id, spec, metric, mode, scope, [], [])
    space = spec.sweep.space
    schedule = []
    for span in member_schedule(client, best_row.run_id, list(space)):
        # A choice was logged as its position in the list (MLflow metrics are numbers).
        values = {key: space[key].args[int(value)] if space[key].kind == "choice" else value
                  for key, value in span.values.items()}
        schedule.append(replace(span, values=values))
    return SweepReport(ledger.sweep_id, ledger.run_id, spec, metric, mode, scope, [best_row], [],
                       population_rows(results, mode), schedule)


def best_trial(job: str, storage: str | None = None) -> BestTrial:
    """The best config of a finished sweep as the trial it ran as (config and seed)."""
    from runyard.execute.planned import planned_trials

    ledger = find_job(job, storage)
    report = _ranked(ledger, None)
    if report.best is None:
        raise UserError(f"{report.job_id} has no finished trial reporting {report.metric} yet")
    trial = next(t for t in planned_trials(ledger, as_ended=True)
                 if t.trial_id == report.best.trial_id)
    return BestTrial(trial.trial_id, trial.seed, trial.config, report.best, report.scope,
                     report.schedule)


def compare(sides: list[str], metric: str | None = None, mode: str | None = None,
            storage: str | None = None, trials: str | None = None
            ) -> tuple[str, str, list[tuple[str, list[float]]], list[Comparison]]:
    """Each side is a job (its best config's values over seeds) or comma-separated MLflow run
    ids (each run's last value of `metric`); the first side against each other one with
    Welch's t-test. With `trials` ("A,B": each a trial id or a config label), the one side is
    a sweep and the two sides are those two of its configs, each with its seeds' values.
    Returns (metric, mode, [(side name, values)], comparisons)."""
    from runyard.tracking.results import welch

    if trials is not None:
        if len(sides) != 1:
            raise UserError(f"--trials compares two configs of one sweep: give that sweep alone, "
                            f"not {len(sides)} sides")
        report = best(sides[0], metric, storage)
        metric, mode = report.metric, mode or report.mode
        named = [(f"{row.label} ({row.trial_id})", row.values)
                 for row in two_configs(report, trials)]
    else:
        if len(sides) < 2:
            raise UserError("compare needs at least two sides (or one sweep and --trials A,B)")
        named = []
        for text in sides:
            name, values, side_metric, side_mode = _side(text, metric, storage)
            metric = metric or side_metric
            mode = mode or side_mode
            named.append((name, values))
    mode = mode or "max"
    first_name, first_values = named[0]
    comparisons = [welch(metric, (first_name, name), first_values, values)
                   for name, values in named[1:]]
    return metric, mode, named, comparisons


def two_configs(report: SweepReport, text: str) -> tuple[ConfigSummary, ConfigSummary]:
    """The two configs of a sweep that "A,B" names, each by a trial id of any of its seeds
    or by its config label. A label may hold commas itself (one per swept key), so the text
    is split at the one comma that leaves a known name on each side."""
    def config_of(name: str) -> ConfigSummary | None:
        return next((row for row in report.rows if name == row.label or name in row.trial_ids),
                    None)

    # (sample, sample) -> the two configs: one entry, however many splits name them
    pairs: dict[tuple[int, int], tuple[ConfigSummary, ConfigSummary]] = {}
    for at in (at for at, char in enumerate(text) if char == ","):
        first, second = config_of(text[:at]), config_of(text[at + 1:])
        if first is not None and second is not None:
            pairs[first.sample, second.sample] = (first, second)
    known = "; ".join(f"{row.label} ({', '.join(row.trial_ids)})" for row in report.rows)
    if len(pairs) != 1:
        trouble = "names two configs in more than one way" if pairs else \
            "does not name two configs with finished trials"
        raise UserError(f"--trials {text} {trouble} of {report.job_id}; give two trial ids or "
                        f"config labels separated by a comma. Its configs: {known}")
    first, second = next(iter(pairs.values()))
    if first.sample == second.sample:
        raise UserError(f"--trials {text}: both name the config {first.label} (its seeds are "
                        f"{', '.join(first.trial_ids)}); give two different configs")
    return first, second


def _side(text: str, metric: str | None, storage: str | None
          ) -> tuple[str, list[float], str | None, str | None]:
    """(name, values, metric, mode) of one side of a comparison."""
    from runyard.execute.storage import Storage
    from runyard.tracking.store import client_for, resolve_tracking_uri

    if "," not in text:
        try:
            report = best(text, metric, storage)
        except UserError:
            if not Storage.resolve(storage, Path.cwd()).ledger_ids():
                raise
        else:
            if report.best is None:
                raise UserError(f"{text}: no finished trial reports {report.metric}")
            return report.job_id, report.best.values, report.metric, report.mode
    if metric is None:
        raise UserError(f"{text}: give --metric when comparing runs by id")
    client = client_for(resolve_tracking_uri(None, Path.cwd()))
    values = []
    for run_id in filter(None, text.split(",")):
        try:
            run = client.get_run(run_id)
        except Exception as error:  # noqa: BLE001 — MLflow raises its own exception type
            raise UserError(f"{run_id}: no such job or MLflow run ({error})") from None
        if metric not in run.data.metrics:
            raise UserError(f"run {run_id} has no metric {metric!r}")
        values.append(run.data.metrics[metric])
    name = text if len(text) <= 24 else f"{text[:21]}..."
    return name, values, metric, None


def promote(job: str, to: str | Path, storage: str | None = None) -> Promoted:
    """Write a sweep's best config back as a plain job spec that extends the sweep's own
    spec file (or repeats it, when that file is gone); never overwrites."""
    target = Path(to)
    ledger = find_job(job, storage)
    if not ledger.is_sweep:
        raise UserError(f"{ledger.sweep_id} is a plain job, not a sweep: nothing to promote")
    if target.exists():
        raise UserError(f"{target} exists; choose another --to (promote never overwrites)")
    try:
        chosen = best_trial(job, storage)
    except UserError:
        raise UserError(f"{ledger.sweep_id} has no finished trial to promote") from None
    report = chosen.summary
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in target.stem)
    header = (f"# Promoted by `runyard promote` on {time.strftime('%Y-%m-%d')} from sweep\n"
              f"# {ledger.sweep_id} (MLflow run {ledger.run_id}): best config by mean\n"
              f"# {_objective(ledger, report)} (trial {report.trial_id}, scope "
              f"{chosen.scope.name}).\n")
    if chosen.schedule:
        header += (f"# Population-based: the config below is where member {report.trial_id} "
                   "ended; it trained with\n"
                   + "".join(f"#   {line}\n" for line in schedule_lines(chosen.schedule)))
    body: dict[str, Any] = {}
    base = Path(ledger.spec_path) if ledger.spec_path else None
    if base is not None and base.is_file():
        body["extends"] = os.path.relpath(base, target.resolve().parent)
        body.update({"name": name, "sweep": None})
    else:
        body.update({k: v for k, v in ledger.spec.items() if k != "sweep"})
        body["name"] = name
    body.update({"seed": chosen.seed, "config": chosen.config})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(body, sort_keys=False))
    promoted = load_spec(target)  # it must validate, and reproduce the trial's config
    if promoted.config != chosen.config or promoted.sweep is not None:
        target.unlink()
        raise RuntimeError(f"{target} would not reproduce trial {chosen.trial_id}; please report this")
    return Promoted(target, ledger.spec["sweep"]["metric"], report, chosen.scope)


def schedule_lines(schedule: list[ScheduleSpan]) -> list[str]:
    """"iterations 1-4: config.lr=0.0188", one line per span of a member's schedule."""
    def shown(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return [f"iterations {span.first}-{span.last}: "
            + ", ".join(f"{key}={shown(value)}" for key, value in span.values.items())
            for span in schedule]


def spread(row: ConfigSummary) -> str:
    """" ± 0.012 over 3 seeds", or nothing for one seed."""
    return f" ± {row.std:.3g} over {row.seeds} seeds" if row.seeds > 1 else ""


def _objective(ledger: Ledger, row: ConfigSummary) -> str:
    return f"{ledger.spec['sweep']['metric']} = {row.value:.6g}{spread(row)}"
