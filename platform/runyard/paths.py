"""Where runyard keeps its files in a project, each folder named once, so that the commands,
the local cluster, the Jobs API client and the queue agree on them. Paths are relative to
the working directory (the project) until a caller resolves them."""

from __future__ import annotations

import os
from pathlib import Path

RUNYARD_DIR = Path(".runyard")  # the embedded storage: ledgers, Tune state, the MLflow store
CLUSTER_STATE_DIR = RUNYARD_DIR / "cluster"  # `runyard cluster local up`: its state, secrets, logs
TRACKING_STATE_DIR = RUNYARD_DIR / "tracking"  # `runyard tracking serve`: auth config, logs
QUEUE_DIR = RUNYARD_DIR / "queue"  # each queued sweep's log
QUEUE_DB = RUNYARD_DIR / "queue.db"


def project_storage(workdir: Path) -> Path:
    """The storage of jobs run from `workdir` when none is named: its .runyard/."""
    return Path(workdir).resolve() / RUNYARD_DIR


def user_config_dir() -> Path:
    """The user's own runyard settings, shared by all their projects (the Slurm profile):
    $XDG_CONFIG_HOME/runyard, else ~/.config/runyard."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "runyard"
