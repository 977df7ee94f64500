"""A sweep's driver leaves its trials' scores beside the ledger when it ends, and `runyard best`
ranks the sweep from them without reading MLflow (`explain` says it has ended, and `ls` counts
its trials from a tag of the parent run): the same
ranking MLflow gives, and never a stale one (the next driver of the job removes them before
its trials change)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import RUNYARD, ledger_of, run_cli, tracking_uri

from runyard import api
from runyard.tracking.results import config_summaries, trial_results

pytestmark = pytest.mark.slow

SWEEP = """\
name: scores
workload: toy.quadratic
config: {sleep_s: 0.5}  # an extension of 4 trials runs for seconds: long enough to watch
stop: {iterations: 2}
tracking: {experiment: toy}
sweep:
  samples: 3
  seeds: 2
  metric: score
  space:
    config.x: {uniform: [0.0, 1.0]}
"""


def ranking_from_mlflow(workdir: Path, job: str) -> list[tuple]:
    ledger = ledger_of(workdir, job)
    results = trial_results(MlflowClient(tracking_uri(workdir)), ledger.run_id, "score")
    return [(row.trial_ids, row.label, row.value) for row in config_summaries(results, "max")]


def test_best_ranks_a_finished_sweep_from_its_saved_scores_as_mlflow_does(workdir: Path):
    spec = workdir / "scores.yaml"
    spec.write_text(SWEEP)
    assert run_cli("run", str(spec), "--id", "scores", cwd=workdir).returncode == 0
    ledger = ledger_of(workdir, "scores")
    saved = ledger.final_results()
    assert saved is not None and saved.metric == "score" and saved.scope == "last"
    assert len(saved.results) == 6 and {r.status for r in saved.results} == {"FINISHED"}

    report = api.best("scores")
    assert [(row.trial_ids, row.label, row.value) for row in report.rows] == \
        ranking_from_mlflow(workdir, "scores")
    assert len(report.rows) == 3 and report.sensitivity  # 3 configs, 2 seeds each
    explained = run_cli("explain", "scores", cwd=workdir)
    assert explained.returncode == 0, explained.stderr
    assert "scores: 6 TERMINATED" in explained.stdout and "the job has ended" in explained.stdout
    assert " 6/6 " in run_cli("ls", cwd=workdir).stdout  # trials counted as the driver ended

    # The next driver removes them before its first trial; its own end writes them anew.
    extending = subprocess.Popen([str(RUNYARD), "extend", "scores", "--samples", "2"], cwd=workdir,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(ledger_of(workdir, "scores").segments) < 2:
        assert extending.poll() is None and time.monotonic() < deadline, extending.stderr.read()
        time.sleep(0.2)
    assert ledger_of(workdir, "scores").final_results() is None
    assert extending.poll() is None  # seen while the extension runs
    assert extending.wait(timeout=180) == 0, extending.stderr.read()
    again = ledger_of(workdir, "scores").final_results()
    assert again is not None and len(again.results) == 10
    assert " 10/10 " in run_cli("ls", cwd=workdir).stdout
    assert [(row.trial_ids, row.label, row.value) for row in api.best("scores").rows] == \
        ranking_from_mlflow(workdir, "scores")
