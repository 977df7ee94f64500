"""Layer 4 — execute: planned trials → a Ray Tune run, tracked by the driver."""

from runyard.execute.job import JobOutcome, run_job

__all__ = ["JobOutcome", "run_job"]
