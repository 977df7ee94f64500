"""Shared fixture: a scratch working directory per test (runyard keeps its state in the
working directory's .runyard/). Helpers to run the real CLI are in runyard_testing.py.

Every run in the suite starts its own Ray, as before the warm Ray existed, unless the
environment says RUNYARD_WARM_RAY=1: then the suite's runs share one warm Ray. That was
42.5 min against ~45 for the whole suite (2026-12-07), and two tests failed with it (see
BENCHMARKS.md, "A warm Ray between runs"). tests/test_warm_ray.py gives each of its tests a
warm Ray of its own. Either way the warm Ray's folder is this session's own, so no test
joins or stops the warm Ray of the person running the suite, and the session stops its own
at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RUNYARD_WARM_RAY", "0")
os.environ["RUNYARD_WARM_RAY_DIR"] = tempfile.mkdtemp(prefix="runyard-tests-warm-ray-")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from runyard.launch import warm_ray

    place = Path(os.environ["RUNYARD_WARM_RAY_DIR"])
    state = warm_ray.read_state(place)
    if state is not None:
        warm_ray.stop_holder(state)
    shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no tracking URI or Ray address inherited."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path
