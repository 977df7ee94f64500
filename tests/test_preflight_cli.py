"""`runyard preflight`, and the preflight gate in front of every sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import JOBS, tracking_uri
from runyard.cli.main import main

pytestmark = pytest.mark.slow


def runs(workdir: Path) -> list:
    client = MlflowClient(tracking_uri(workdir))
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_preflight_passes_on_the_shipped_linear_job(workdir: Path, capsys):
    assert main(["preflight", str(JOBS / "digits_linear.yaml")]) == 0
    out = capsys.readouterr().out
    for check in ("init_loss", "overfit_one_batch", "batch_independence"):
        assert check in out
    (run,) = runs(workdir)
    assert run.data.tags["runyard.kind"] == "preflight" and run.info.status == "FINISHED"
    assert run.data.tags["runyard.preflight.init_loss"] == "pass"


def test_a_failing_preflight_keeps_the_sweep_from_starting(workdir: Path, capsys):
    # A badly scaled init: the loss at init is far from -log(1/10).
    code = main(["run", str(JOBS / "digits_linear_sweep.yaml"), "--set", "config.init_std=3.0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "the sweep did not start" in out and "--skip-preflight" in out
    assert not (workdir / ".runyard" / "ray_results").exists()  # no Tune experiment was made
    (run,) = runs(workdir)  # the preflight's own run, and no sweep
    assert run.data.tags["runyard.kind"] == "preflight" and run.info.status == "FAILED"
    assert run.data.tags["runyard.preflight.init_loss"] == "FAIL"


def test_preflight_of_a_workload_without_checks_is_invalid_input(workdir: Path, capsys):
    spec = workdir / "toy.yaml"
    spec.write_text("name: toy\nworkload: toy.quadratic\nstop: {iterations: 1}\n")
    assert main(["preflight", str(spec)]) == 2
    assert "no preflight checks" in capsys.readouterr().err
