"""Inputs that depend on this machine (a data path that must exist here), checked when a job
is about to run, not by `runyard validate`: a spec written for a cluster still validates on
a laptop."""

from __future__ import annotations

from runyard import workloads
from runyard.errors import UserError
from runyard.spec import JobSpec, workload_context


def check_inputs(spec: JobSpec, spec_path: str) -> None:
    """UserError listing what the spec's workload cannot find here."""
    workload_cls = workloads.get(spec.workload)
    config = workload_cls.Config.model_validate(spec.config)
    problems = workload_cls.check_inputs(config, workload_context(spec))
    if problems:
        raise UserError(f"{spec_path}: cannot run here:\n" + "\n".join(f"  {p}" for p in problems))
