"""Layer 7 — api: runyard as Python functions. Each is one whole use of runyard (validate,
plan, preflight, run, submit, resume, rerun_failed, extend, best, compare, promote, explain),
returns a typed result and prints nothing but a running job's progress. The CLI parses its
flags into these calls and renders what they return; the queue and notebooks call them too:

    from runyard import api
    outcome = api.run("jobs/digits_linear_sweep.yaml", ["sweep.samples=4"])
    api.best_trial(outcome.job_id).config

Importing it is cheap: Ray, MLflow and torch load only when a function needs them.
"""

from runyard.api import queue
from runyard.api.jobs import (ClusterJob, Plan, PreflightFailed, PreflightReport, Submission,
                              cluster_jobs, continue_job, explain, extend, find_job, plan, preflight, rerun_failed, resume,
                              run, submit, validate)
from runyard.api.requests import ContinueRequest, RunRequest
from runyard.api.sweeps import (BestTrial, Promoted, SweepReport, best, best_trial, compare,
                                promote)
from runyard.execute.outcome import JobOutcome

__all__ = ["BestTrial", "ClusterJob", "ContinueRequest", "cluster_jobs", "JobOutcome", "Plan", "PreflightFailed",
           "PreflightReport", "Promoted", "RunRequest", "Submission", "SweepReport", "best",
           "best_trial", "compare", "continue_job", "explain", "extend", "find_job", "plan",
           "preflight", "promote", "queue", "rerun_failed", "resume", "run", "submit", "validate"]
