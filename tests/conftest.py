"""Shared fixture: a scratch working directory per test (runyard keeps its state in the
working directory's .runyard/). Helpers to run the real CLI are in runyard_testing.py.

Every run in the suite starts its own Ray (RUNYARD_WARM_RAY=0), as it did before the warm
Ray existed, except in tests/test_warm_ray.py, which turns it on with a folder of each
test's own; and no test ever joins or stops the warm Ray of the person running the suite
(RUNYARD_WARM_RAY_DIR points into this session's temp folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ["RUNYARD_WARM_RAY"] = "0"
os.environ["RUNYARD_WARM_RAY_DIR"] = tempfile.mkdtemp(prefix="runyard-tests-warm-ray-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(os.environ["RUNYARD_WARM_RAY_DIR"], ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no tracking URI or Ray address inherited."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path
