"""`sweep.scope`: which of a trial's reports score it, and reading the result anywhere.

One real sweep of a tiny script whose three configs rank one way by their last report, another
by their best and a third by the mean of their last three, on a real embedded Ray and MLflow
store; read back through the CLI piped into a file (no value cut), `best`, `promote`, the
parent run, and `compare --trials` between two of its configs. TPE's told value is checked by
driving the searcher as Tune does.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard import api
from runyard.errors import UserError
from runyard.cli.main import main
from runyard.execute.adaptive import ProposedTrials
from runyard.execute.tune_runner import trial_payload
from runyard.spec import load_spec
from runyard_testing import ledger_of, run_cli, tracking_uri

# Each config's reports of `score`, by the scope that ranks it first (long names, to be cut
# if anything cuts them):
CURVES = {
    "climbs-slowly-and-ends-highest-at-its-very-last-report": [0.1, 0.2, 0.3, 0.6],  # last
    "peaks-at-its-first-report-then-collapses-to-the-floor": [0.9, 0.1, 0.1, 0.1],  # all
    "holds-steady-at-one-half-through-every-single-report": [0.5, 0.5, 0.5, 0.5],  # last-3-avg
}
CLIMBS, PEAKS, STEADY = CURVES

SCRIPT = f"""\
import sys
curve, seed = sys.argv[1], int(sys.argv[2])
for value in {CURVES!r}[curve]:
    print(f"score={{value + 0.01 * seed}}", flush=True)
"""

SWEEP = f"""\
name: curves
workload: command
config:
  command: python curve.py {{params.curve}} {{seed}}
  params: {{curve: {STEADY}, lr: 0.1}}
  metrics: {{score: max}}
stop: {{iterations: 4}}
tracking: {{experiment: curves}}
sweep:
  search: grid
  seeds: 2
  metric: score
  scope: last-3-avg
  max_concurrent: 2
  space:
    config.params.curve: {{grid: {list(CURVES)}}}
    config.params.lr: {{grid: [0.000123456789]}}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the sweep `curves` ran in."""
    folder = tmp_path_factory.mktemp("scope")
    (folder / "curve.py").write_text(SCRIPT)
    (folder / "curves.yaml").write_text(SWEEP)
    result = run_cli("run", "curves.yaml", "--id", "curves", "--num-cpus", "2", cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def seed_mean(curve: str, score: Callable[[list[float]], float]) -> float:
    return statistics.fmean(score([v + 0.01 * seed for v in CURVES[curve]]) for seed in (0, 1))


def label_of(curve: str) -> str:
    return f"params.curve={curve},params.lr=0.000123"


@pytest.mark.slow
def test_the_scope_ranks_the_sweep_its_parent_run_and_best(sweep: Path):
    ledger = ledger_of(sweep, "curves")
    parent = MlflowClient(tracking_uri(sweep)).get_run(ledger.run_id)
    assert parent.data.tags["runyard.best_config"] == label_of(STEADY)
    assert parent.data.metrics["best_score"] == pytest.approx(
        seed_mean(STEADY, lambda v: statistics.fmean(v[-3:])))
    assert "mean of its last 3 reported values (scope `last-3-avg`)" in \
        parent.data.tags["mlflow.note.content"]

    # `best` piped (a subprocess's stdout is a pipe): ranked by the sweep's scope, whole labels.
    piped = run_cli("best", "curves", cwd=sweep)
    assert piped.returncode == 0, piped.stderr
    assert "scope last-3-avg" in piped.stdout and "…" not in piped.stdout
    ranks = sorted(piped.stdout.find(label_of(curve)) for curve in CURVES)
    assert -1 not in ranks
    assert [piped.stdout.find(label_of(c)) for c in (STEADY, CLIMBS, PEAKS)] == ranks

    storage = str(sweep / ".runyard")
    for scope, first, score in (("last", CLIMBS, lambda v: v[-1]), ("all", PEAKS, max)):
        report = api.best("curves", storage=storage, scope=scope)
        assert report.rows[0].label == label_of(first), scope
        assert report.rows[0].value == pytest.approx(seed_mean(first, score))
        assert report.rows[0].seeds == 2
    with pytest.raises(UserError, match="last-N-avg"):
        api.best("curves", storage=storage, scope="last-0-avg")

    promoted = api.promote("curves", sweep / "best.yaml", storage=storage)
    assert promoted.best.label == label_of(STEADY)
    assert "scope last-3-avg" in (sweep / "best.yaml").read_text()


@pytest.mark.slow
def test_compare_trials_tests_two_configs_of_one_sweep_over_their_seeds(
        sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.chdir(sweep)
    rows = {row.label: row for row in api.best("curves").rows}
    steady, peaks = rows[label_of(STEADY)], rows[label_of(PEAKS)]
    # One side by the trial id of its second seed, the other by its label (which has a comma);
    # the output captured, as piped.
    assert main(["compare", "curves", "--trials", f"{steady.trial_ids[1]},{label_of(PEAKS)}"]) == 0
    out = capsys.readouterr().out
    assert f"{label_of(STEADY)} ({steady.trial_id})" in out
    assert f"{label_of(PEAKS)} ({peaks.trial_id})" in out
    assert "is better than" in out and "2 each" in out

    with pytest.raises(UserError, match="both name the config"):
        api.compare(["curves"], trials=",".join(steady.trial_ids))
    with pytest.raises(UserError, match="does not name two configs"):
        api.compare(["curves"], trials=f"{steady.trial_id},t0099")


def test_validate_refuses_a_scope_that_is_not_one(tmp_path: Path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SWEEP.replace("scope: last-3-avg", "scope: last-0-avg"))
    assert main(["validate", str(spec)]) == 2
    error = capsys.readouterr().err
    assert f"{spec}:13: sweep.scope: 'last-0-avg' is not a scope" in error
    assert "last-N-avg with N >= 1" in error


def test_tpe_is_told_each_configs_seed_mean_of_its_scope(tmp_path: Path):
    """The searcher sees every report in Tune's result stream and tells Optuna the seed mean
    of each trial's best report (scope all), not of its last."""
    spec_file = tmp_path / "tpe.yaml"
    spec_file.write_text(SWEEP.replace("search: grid", "search: tpe\n  samples: 3")
                         .replace("scope: last-3-avg", "scope: all")
                         .replace(f"{{grid: {list(CURVES)}}}", f"{{choice: {list(CURVES)}}}")
                         .replace("{grid: [0.000123456789]}", "{loguniform: [1.0e-4, 1.0e-2]}"))
    spec = load_spec(spec_file)
    searcher = ProposedTrials(spec, 0, functools.partial(trial_payload, spec, workdir=tmp_path,
                                                         storage=str(tmp_path / "tune")))
    for config in range(3):
        for seed in (0, 1):
            trial = f"tune-{config}-{seed}"
            searcher.suggest(trial)
            peak = config + 0.1 * seed  # each trial's best report; its last is 1 below it
            for iteration, value in enumerate([peak - 0.5, peak, peak - 1], start=1):
                searcher.on_trial_result(trial, {"score": value, "training_iteration": iteration})
            searcher.on_trial_complete(trial, {"score": peak - 1, "training_iteration": 3})
    study = searcher.searcher.searcher._ot_study  # Ray's attribute: what Optuna was told
    assert [t.value for t in study.trials] == pytest.approx([0.05, 1.05, 2.05])
