"""Shared fixtures: a scratch working directory per test (runyard keeps its state in the
working directory's .runyard/), the repository's jobs/, and helpers to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no tracking URI or Ray address inherited."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def run_cli(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """The installed `runyard` console script, as a researcher would type it."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    full_env.update(env or {})
    return subprocess.run([str(RUNYARD), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def tracking_uri(directory: Path) -> str:
    return f"sqlite:///{directory / '.runyard' / 'mlflow.db'}"
