"""How a job ended, as the driver reports it to its caller (the application layer).

Its own module, free of Ray and MLflow imports, so that the API can name the type without
paying for the executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runyard.errors import EXIT_OK

if TYPE_CHECKING:
    from runyard.tracking.results import ConfigSummary


@dataclass(frozen=True)
class JobOutcome:
    status: str  # FINISHED | FAILED | KILLED
    run_id: str  # the job's MLflow run: the single run, or the sweep's parent
    job_id: str
    trial_run_ids: dict[str, str] = field(default_factory=dict)  # trial id -> its MLflow run
    failed_trials: list[str] = field(default_factory=list)
    metric: str | None = None  # sweeps: the objective
    best: ConfigSummary | None = None  # sweeps: the best config by its seed mean of `metric`
    time_budget_s: float | None = None  # sweeps: the time budget, if it had one
    not_started: int = 0  # trials the time budget left unstarted
    exit_code: int = EXIT_OK
    link: str | None = None  # the job's run in the tracking server's UI (None: the embedded store)
