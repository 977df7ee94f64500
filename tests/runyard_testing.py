"""Helpers for runyard's tests: the repository's paths and the real CLI, as a researcher
would type it. (A module of its own: several conftest.py files exist under tests/.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")


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


def ledgers(directory: Path, prefix: str = "") -> list:
    """The ledgers of the jobs run from `directory` (its default storage, .runyard/) whose id
    starts with `prefix`."""
    from runyard.execute.ledger import Ledger
    from runyard.execute.storage import Storage

    storage = Storage.resolve(None, directory)
    return [Ledger.load(storage.ledger_path(job_id)) for job_id in storage.ledger_ids()
            if job_id.startswith(prefix)]


def ledger_of(directory: Path, key: str):
    """The ledger of job `key` (an id or an MLflow run id) run from `directory`."""
    from runyard.execute.ledger import Ledger
    from runyard.execute.storage import Storage

    return Ledger.find(Storage.resolve(None, directory), key)
