"""Layer 7 — api: runyard as Python functions. Each is one whole use of runyard (validate,
plan, preflight, run, submit, resume, rerun_failed, extend, best, compare, promote, explain),
returns a typed result and prints nothing but a running job's progress; `api.clusters` holds
the local cluster and the jobs on a cluster's Jobs API, `api.slurm` jobs sent to Slurm.
The CLI parses its
flags into these calls and renders what they return; the queue and notebooks call them too:

    from runyard import api
    outcome = api.run("jobs/digits_linear_sweep.yaml", ["sweep.samples=4"])
    api.best_trial(outcome.job_id).config

Names load on first use (PEP 562), so `from runyard import api` costs nothing: the CLI's
--help does not pay for the spec schemas, and `validate` does not pay for Ray or MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "runyard.api.jobs": ["ClusterJob", "Plan", "PreflightFailed", "PreflightReport", "Submission",
                         "cluster_jobs", "continue_job", "continue_on_cluster", "explain", "extend",
                         "find_job", "is_jobs_url", "plan", "preflight", "rerun_failed", "resume",
                         "run", "submit", "validate"],
    "runyard.api.requests": ["ContinueRequest", "RunRequest"],
    "runyard.api.sweeps": ["BestTrial", "Promoted", "SweepReport", "best", "best_trial",
                           "compare", "promote"],
    "runyard.execute.outcome": ["JobOutcome"],
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}
_SUBMODULES = ("clusters", "jobs", "queue", "requests", "slurm", "sweeps")

__all__ = sorted([*_MODULE_OF, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
