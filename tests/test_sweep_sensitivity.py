"""`runyard best`'s "which hyperparameters matter" table, from configs with known values."""

from __future__ import annotations

import pytest
from scipy import stats

from runyard.tracking.results import ConfigSummary, sensitivity


def row(value: float, **params: str) -> ConfigSummary:
    return ConfigSummary(sample=0, trial_id="t0000", run_id="r", trial_ids=("t0000",), label="",
                         value=value, std=0.0,
                         ci=(value, value), seeds=1, values=[value], params=params)


def test_numeric_dimensions_are_ranked_whether_drawn_or_on_a_grid():
    # lr on a grid, width a choice of numbers, activation a choice of names, seed unrelated.
    grid = [(3e-4, "64", "relu", 0.55), (3e-4, "256", "tanh", 0.58), (1e-3, "64", "tanh", 0.71),
            (1e-3, "256", "relu", 0.69), (3e-3, "64", "relu", 0.83), (3e-3, "256", "tanh", 0.80),
            (1e-2, "64", "tanh", 0.88), (1e-2, "256", "relu", 0.86)]
    rows = sorted((row(v, **{"config.lr": repr(lr), "config.width": w, "config.activation": a})
                   for lr, w, a, v in grid), key=lambda r: -r.value)
    ranked = sensitivity(rows, ["config.width", "config.activation", "config.lr"])
    by_name = {item.parameter: item for item in ranked}

    lr = by_name["config.lr"]
    expected = stats.spearmanr([g[0] for g in grid], [g[3] for g in grid])
    assert lr.rho == pytest.approx(expected.statistic) and lr.rho > 0.9
    assert lr.p == pytest.approx(expected.pvalue)
    assert lr.good == "0.01 .. 0.01"  # the best quarter: the two lr=1e-2 configs
    assert by_name["config.width"].rho < 0  # the narrow net is a little better at most lrs
    # Names have no order: no correlation, the best quarter's values instead.
    assert by_name["config.activation"].rho is None and by_name["config.activation"].good == "relu, tanh"
    assert ranked[0].parameter == "config.lr"  # strongest first


def test_a_dimension_that_did_not_vary_or_too_few_configs_gets_no_correlation():
    rows = [row(0.9, **{"config.lr": "0.1"}), row(0.8, **{"config.lr": "0.1"}),
            row(0.7, **{"config.lr": "0.1"})]
    [only] = sensitivity(rows, ["config.lr"])
    assert only.rho is None and only.good == "0.1"
    [few] = sensitivity(rows[:2], ["config.lr"])
    assert few.rho is None
