"""A sweep's trials read back from MLflow, and what they say together.

The objective of a config is the mean, over its seeds, of each trial's last reported value
of the sweep's metric; it comes with the seeds' standard deviation and a 95% confidence
interval (Student's t), so "best" is never one lucky seed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient
from scipy import stats

from runyard.tracking.store import PARENT


@dataclass(frozen=True)
class TrialResult:
    trial_id: str
    run_id: str
    status: str
    seed: int
    sample: int
    label: str
    value: float | None  # last reported value of the metric asked for
    iterations: int
    params: dict[str, str]


def trial_results(client: MlflowClient, parent_run_id: str, metric: str | None) -> list[TrialResult]:
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{PARENT}` = '{parent_run_id}'",
                              max_results=50000)
    results = []
    for run in runs:
        tags = run.data.tags
        if "runyard.trial_id" not in tags:
            continue
        results.append(TrialResult(
            trial_id=tags["runyard.trial_id"], run_id=run.info.run_id, status=run.info.status,
            seed=int(tags.get("runyard.seed", 0)), sample=int(tags.get("runyard.sample", 0)),
            label=run.info.run_name or "", value=run.data.metrics.get(metric) if metric else None,
            iterations=int(run.data.metrics.get("training_iteration", 0)),
            params=run.data.params,
        ))
    return sorted(results, key=lambda r: r.trial_id)


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Half-width of the two-sided Student-t interval of the mean (0 for a single value)."""
    if len(values) < 2:
        return (0.0, 0.0)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return (statistics.fmean(values) - half, statistics.fmean(values) + half)


def config_summaries(results: list[TrialResult], mode: str) -> list[dict[str, Any]]:
    """One row per sampled config (its seeds pooled), best first; finished trials only."""
    by_sample: dict[int, list[TrialResult]] = {}
    for result in results:
        if result.status == "FINISHED" and result.value is not None and math.isfinite(result.value):
            by_sample.setdefault(result.sample, []).append(result)
    rows = []
    for sample, group in by_sample.items():
        values = [r.value for r in group]
        first = min(group, key=lambda r: r.trial_id)
        rows.append({
            "sample": sample, "trial_id": first.trial_id, "run_id": first.run_id,
            "label": first.label.rsplit(",seed=", 1)[0] if "," in first.label else first.label,
            "value": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci": confidence_interval(values), "seeds": len(values),
            "params": first.params,
        })
    return sorted(rows, key=lambda row: row["value"], reverse=(mode == "max"))


def best_config(results: list[TrialResult], mode: str) -> dict[str, Any] | None:
    rows = config_summaries(results, mode)
    return rows[0] if rows else None
