"""Preflight: a workload's own sanity checks, run on the spec's config before a sweep spends
hours on a bug ("A Recipe for Training Neural Networks": verify loss at init, overfit one
batch, an input-independent baseline, batch independence, same seed same numbers)."""

from __future__ import annotations

from typing import Any

from runyard import workloads
from runyard.spec import JobSpec, workload_context


def run_preflight(spec: JobSpec) -> list[Any] | None:
    """The workload's check results on the spec's base config, in this process; None when
    the workload has no preflight."""
    cls = workloads.get(spec.workload)
    workload = cls()
    workload.setup(cls.Config.model_validate(spec.config), workload_context(spec))
    try:
        return workload.preflight()
    finally:
        workload.close()


def has_preflight(spec: JobSpec) -> bool:
    cls = workloads.get(spec.workload)
    return cls.preflight is not workloads.Workload.preflight
