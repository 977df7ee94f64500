"""A sweep's trials read back from MLflow, and what they say together.

The objective of a config is the mean, over its seeds, of each trial's score: its reports of
the sweep's metric summed up by the sweep's scope (runyard.scope: by default its last
reported value). It comes with the seeds' standard deviation and a 95% confidence interval
(Student's t), so "best" is never one lucky seed.
"""

from __future__ import annotations

import math
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runyard.scope import LAST, Scope
from runyard.tracking.tags import PARENT, SAMPLE, SEED, TRIAL_ID

if TYPE_CHECKING:  # reading a job's saved results back needs no MLflow (execute/ledger.py)
    from mlflow.tracking import MlflowClient

HISTORY_READERS = 8  # metric histories read at once: one request per trial, to a server or SQLite


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    run_id: str
    status: str
    seed: int
    sample: int
    label: str
    value: float | None  # the trial's score on the metric asked for (its scope's summary)
    iterations: int
    params: dict[str, str]
    # (step, value) of that metric, oldest first, when its scope needed them (else None)
    history: tuple[tuple[int, float], ...] | None = None


def trial_results(client: MlflowClient, parent_run_id: str, metric: str | None,
                  scope: Scope = LAST, mode: str = "max") -> list[TrialResult]:
    """The sweep's trials, each scored on `metric` by `scope` (in the direction `mode`). A
    scope other than `last` reads each trial's history of the metric, one request per trial."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT}` = '{parent_run_id}'",
                              max_results=50000)
    runs = [run for run in runs if TRIAL_ID in run.data.tags]
    histories: dict[str, tuple[tuple[int, float], ...]] = {}
    if metric and scope.needs_history:
        reported = [run.info.run_id for run in runs if metric in run.data.metrics]

        def history(run_id: str) -> tuple[tuple[int, float], ...]:
            points = client.get_metric_history(run_id, metric)
            return tuple((m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp)))

        with ThreadPoolExecutor(HISTORY_READERS) as pool:
            histories = dict(zip(reported, pool.map(history, reported)))
    results = []
    for run in runs:
        tags, run_id = run.data.tags, run.info.run_id
        value = run.data.metrics.get(metric) if metric else None
        if histories.get(run_id):
            value = scope.score([v for _, v in histories[run_id]], mode)
        results.append(TrialResult(
            trial_id=tags[TRIAL_ID], run_id=run_id, status=run.info.status,
            seed=int(tags.get(SEED, 0)), sample=int(tags.get(SAMPLE, 0)),
            label=run.info.run_name or "", value=value,
            iterations=int(run.data.metrics.get("training_iteration", 0)),
            params=run.data.params, history=histories.get(run_id),
        ))
    return sorted(results, key=lambda r: r.trial_id)


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Half-width of the two-sided Student-t interval of the mean (0 for a single value)."""
    if len(values) < 2:
        return (0.0, 0.0)
    from scipy import stats  # here, not above: a job's saved results are read without it

    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return (statistics.fmean(values) - half, statistics.fmean(values) + half)


@dataclass(frozen=True)
class ConfigSummary:
    """One sampled config with its seeds pooled: the objective is the mean of their values."""

    sample: int
    trial_id: str  # its first seed's trial
    run_id: str  # that trial's MLflow run
    trial_ids: tuple[str, ...]  # the trials of all its seeds that count, first seed first
    label: str  # the config without its seed, e.g. "config.lr=0.003"
    value: float  # mean over seeds
    std: float
    ci: tuple[float, float]  # 95% confidence interval of the mean
    seeds: int
    values: list[float]
    params: dict[str, str]  # the first seed's MLflow params


def config_summaries(results: list[TrialResult], mode: str) -> list[ConfigSummary]:
    """One row per sampled config (its seeds pooled), best first; finished trials only."""
    by_sample: dict[int, list[TrialResult]] = {}
    for result in results:
        if result.status == "FINISHED" and result.value is not None and math.isfinite(result.value):
            by_sample.setdefault(result.sample, []).append(result)
    rows = []
    for sample, group in by_sample.items():
        values = [r.value for r in group]
        first = min(group, key=lambda r: r.trial_id)
        rows.append(ConfigSummary(
            sample=sample, trial_id=first.trial_id, run_id=first.run_id,
            trial_ids=tuple(sorted(r.trial_id for r in group)),
            label=first.label.rsplit(",seed=", 1)[0] if "," in first.label else first.label,
            value=statistics.fmean(values),
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            ci=confidence_interval(values), seeds=len(values), values=values,
            params=first.params,
        ))
    return sorted(rows, key=lambda row: row.value, reverse=(mode == "max"))


@dataclass(frozen=True)
class Sensitivity:
    """How one swept hyperparameter relates to the objective across a sweep's configs."""

    parameter: str  # the swept key, e.g. config.lr
    rho: float | None  # Spearman rank correlation with the objective (None: values not ordered)
    p: float | None  # its two-sided p-value
    good: str  # the values, or the span, of the best quarter of configs


def sensitivity(rows: list[ConfigSummary], parameters: list[str]) -> list[Sensitivity]:
    """Which hyperparameters matter: the Spearman rank correlation of each dimension whose
    values are numbers with the objective (a rank statistic, so a log-uniform dimension
    needs no log), and where the best quarter of configs lies. A dimension of names
    (a choice of strings) gets only the best quarter's values. Strongest first."""
    from scipy import stats

    report = []
    top = rows[: max(1, len(rows) // 4)]
    for key in parameters:
        values = [_number(row.params.get(key)) for row in rows]
        ordered = len(rows) >= 3 and None not in values and len(set(values)) > 1
        if not ordered:
            best = sorted({row.params.get(key) or "" for row in top})
            report.append(Sensitivity(key, None, None, ", ".join(best)))
            continue
        rho, p = stats.spearmanr(values, [row.value for row in rows])
        good = [_number(row.params[key]) for row in top]
        report.append(Sensitivity(key, float(rho), float(p), f"{min(good):.3g} .. {max(good):.3g}"))
    return sorted(report, key=lambda r: -abs(r.rho) if r.rho is not None and math.isfinite(r.rho)
                  else 0.0)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def best_config(results: list[TrialResult], mode: str) -> ConfigSummary | None:
    rows = config_summaries(results, mode)
    return rows[0] if rows else None


# A population-based sweep (search: pbt) runs one population per seed, and its members change
# their configs as they train: a member's initial config (its sample) says little, so its
# result is not pooled by config. What it found is each population's best member, and the
# sweep's objective is their mean over populations, with its confidence interval.


@dataclass(frozen=True)
class PopulationRow:
    """One population of a population-based sweep (its members share a seed)."""

    seed: int
    best: TrialResult  # its best finished member
    mean: float  # the mean of its finished members' last values
    members: int  # finished members with a value


def population_rows(results: list[TrialResult], mode: str) -> list[PopulationRow]:
    """Each population's best member and its mean, best population first."""
    by_seed: dict[int, list[TrialResult]] = {}
    for result in results:
        if result.status == "FINISHED" and result.value is not None and math.isfinite(result.value):
            by_seed.setdefault(result.seed, []).append(result)
    pick = max if mode == "max" else min
    rows = [PopulationRow(seed, pick(group, key=lambda r: r.value),
                          statistics.fmean(r.value for r in group), len(group))
            for seed, group in by_seed.items()]
    return sorted(rows, key=lambda row: row.best.value, reverse=(mode == "max"))


def population_best(results: list[TrialResult], mode: str) -> ConfigSummary | None:
    """A population-based sweep's objective, as a row like a config's: the mean over
    populations of each one's best member (`values`: those members' values, best first),
    named after the best member of all."""
    rows = population_rows(results, mode)
    if not rows:
        return None
    values = [row.best.value for row in rows]
    top = rows[0].best
    return ConfigSummary(
        sample=top.sample, trial_id=top.trial_id, run_id=top.run_id,
        trial_ids=tuple(row.best.trial_id for row in rows),  # each population's best member
        label=f"member {top.trial_id} of population seed={top.seed}",
        value=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
        ci=confidence_interval(values), seeds=len(values), values=values, params=top.params)


@dataclass(frozen=True)
class ScheduleSpan:
    """Iterations `first`..`last` of a member, trained with `values` (metric name -> value,
    as its run logged them: config.lr ...)."""

    first: int
    last: int
    values: dict[str, float]


def member_schedule(client: MlflowClient, run_id: str, names: list[str]) -> list[ScheduleSpan]:
    """A member's hyperparameters by iteration ranges, from the metrics it logged each step."""
    histories = {name: {int(m.step): m.value for m in client.get_metric_history(run_id, name)}
                 for name in names}
    spans: list[ScheduleSpan] = []
    for step in sorted(set().union(*histories.values())):
        values = {name: history[step] for name, history in histories.items() if step in history}
        if spans and spans[-1].values == values and spans[-1].last == step - 1:
            spans[-1] = ScheduleSpan(spans[-1].first, step, values)
        else:
            spans.append(ScheduleSpan(step, step, values))
    return spans


@dataclass(frozen=True)
class Comparison:
    metric: str
    names: tuple[str, str]
    means: tuple[float, float]
    counts: tuple[int, int]
    difference: float  # mean A - mean B
    standard_error: float  # of the difference (Welch)
    t: float | None
    p: float | None
    effect_size: float | None  # Hedges' g

    def sentence(self, mode: str) -> str:
        a, b = self.names
        better = (self.difference > 0) == (mode == "max")
        winner, loser = (a, b) if better else (b, a)
        counts = (f"{self.counts[0]} each" if self.counts[0] == self.counts[1]
                  else f"{self.counts[0]} and {self.counts[1]}")
        gap = f"{abs(self.difference):.4g} ± {self.standard_error:.2g}"
        if self.p is None:
            return (f"{winner} scores higher than {loser} on {self.metric} by {gap}, but with "
                    f"{counts} values there is no test of significance (at least 2 each needed)")
        verdict = "better than" if self.p < 0.05 else "not significantly different from"
        return (f"{winner} is {verdict} {loser} on {self.metric} by {gap}, p = {self.p:.3g} "
                f"(Welch's t-test), Hedges' g = {self.effect_size:.2f}, {counts}")


def welch(metric: str, names: tuple[str, str], a: list[float], b: list[float]) -> Comparison:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with Hedges' g."""
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(metric, names, (mean_a, mean_b), (len(a), len(b)), mean_a - mean_b,
                          float("nan"), None, None, None)
    from scipy import stats

    var_a, var_b = statistics.variance(a), statistics.variance(b)
    test = stats.ttest_ind(a, b, equal_var=False)
    pooled = math.sqrt(((len(a) - 1) * var_a + (len(b) - 1) * var_b) / (len(a) + len(b) - 2))
    correction = 1 - 3 / (4 * (len(a) + len(b)) - 9)  # small-sample bias of Cohen's d
    g = (mean_a - mean_b) / pooled * correction if pooled > 0 else float("inf")
    return Comparison(metric, names, (mean_a, mean_b), (len(a), len(b)), mean_a - mean_b,
                      math.sqrt(var_a / len(a) + var_b / len(b)), float(test.statistic),
                      float(test.pvalue), g)


SEARCH_NAMES = {"random": "Random search", "grid": "Grid search",
                "tpe": "TPE search (Optuna; each config proposed from the seed means before it)",
                "pbt": "Population-based training (members copy and perturb the best as they "
                       "train; one population per seed)"}


def sweep_description(job_id: str, sweep: Any, results: list[TrialResult],
                      best: dict[str, Any] | None) -> str:
    """The sweep parent's Description in the MLflow UI (markdown): what was swept, the
    objective, the best config and the job id. `sweep` is the spec's sweep block
    (spec.schema.SweepSpec: tracking reads it, but imports nothing from spec)."""
    configs = len({r.sample for r in results})
    finished = sum(r.status == "FINISHED" for r in results)
    failed = sum(r.status == "FAILED" for r in results)
    dimensions = ", ".join(f"`{key}` ({d.kind} {_range_text(d.args)})"
                           for key, d in sweep.space.items())
    objective = ("the mean over populations of each population's best member's last reported "
                 "value" if sweep.search == "pbt" else
                 f"the mean over a config's seeds of {sweep.objective_scope.describe()} "
                 f"(scope `{sweep.scope}`)")
    lines = [
        f"**{SEARCH_NAMES[sweep.search]}** over {dimensions}: {configs} config"
        f"{'s' if configs != 1 else ''} × {sweep.seeds} seed{'s' if sweep.seeds != 1 else ''}, "
        f"{len(results)} trials ({finished} finished, {failed} failed).",
        f"**Objective:** {'maximize' if sweep.mode == 'max' else 'minimize'} `{sweep.metric}`, "
        f"{objective}.",
    ]
    if best is None:
        lines.append("**Best:** none (no trial finished with a value).")
    else:
        spread = f" ± {best.std:.3g} (std) over {best.seeds} seeds" if best.seeds > 1 else ""
        lines.append(f"**Best:** `{best.label}`: {sweep.metric} = {best.value:.4g}{spread} "
                     f"(trial {best.trial_id}, run {best.run_id}).")
    lines.append(f"**Job:** `{job_id}`: `runyard best {job_id}` ranks every config; "
                 f"`runyard extend {job_id} --samples N` adds more.")
    return "\n\n".join(lines)


def _range_text(args: Any) -> str:
    if isinstance(args, (list, tuple)):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in args) + "]"
    return str(args)
