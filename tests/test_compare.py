"""`runyard compare`: Welch's t-test, checked against scipy on known data in a real store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scipy import stats

from runyard.cli.main import main
from runyard.tracking.results import confidence_interval, welch
from runyard.tracking.store import JobTracking

A = [0.712, 0.705, 0.731, 0.698, 0.720]
B = [0.690, 0.702, 0.681, 0.695, 0.688, 0.679]


def make_runs(directory: Path, values: list[float]) -> list[str]:
    tracking = JobTracking(f"sqlite:///{directory / '.runyard' / 'mlflow.db'}", "compare")
    runs = []
    for value in values:
        run = tracking.start_run("r", {"runyard.kind": "run"}, {})
        tracking.writer.log_metrics(run, {"val_top1": value}, step=1)
        tracking.writer.end_run(run, "FINISHED")
        runs.append(run)
    tracking.close()
    return [run.id for run in runs]


def test_compare_gives_scipys_welch_p_value(workdir: Path, capsys):
    a, b = make_runs(workdir, A), make_runs(workdir, B)
    assert main(["compare", ",".join(a), ",".join(b), "--metric", "val_top1", "--mode", "max"]) == 0
    out = capsys.readouterr().out
    expected = stats.ttest_ind(A, B, equal_var=False).pvalue
    p = float(re.search(r"p = ([0-9.e-]+)", out).group(1))
    assert p == pytest.approx(expected, rel=1e-2)
    assert "is better than" in out and "5 and 6" in out and "Hedges' g" in out


def test_welch_matches_scipy_exactly_and_reports_direction():
    comparison = welch("loss", ("a", "b"), A, B)
    reference = stats.ttest_ind(A, B, equal_var=False)
    assert comparison.p == pytest.approx(reference.pvalue, rel=1e-12)
    assert comparison.t == pytest.approx(reference.statistic, rel=1e-12)
    assert comparison.sentence("min").startswith("b is better than a on loss")


def test_one_value_per_side_says_no_test_is_possible():
    sentence = welch("m", ("a", "b"), [1.0], [0.5]).sentence("max")
    assert "no test of significance" in sentence


def test_confidence_interval_is_students_t():
    low, high = confidence_interval(A)
    half = stats.t.ppf(0.975, len(A) - 1) * stats.sem(A)
    assert (high - low) / 2 == pytest.approx(half)
