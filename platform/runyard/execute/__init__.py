"""Layer 4 — execute: planned trials → a Ray Tune run, tracked by the driver."""

from runyard.execute.job import (JobOutcome, extend_job, load_ledger_spec, planned_trials,
                                 resume_job, run_job)

__all__ = ["JobOutcome", "extend_job", "load_ledger_spec", "planned_trials", "resume_job",
           "run_job"]
