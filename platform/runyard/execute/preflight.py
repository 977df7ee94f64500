"""Preflight: a workload's own sanity checks on the spec's config, before a sweep spends hours
on a bug ("A Recipe for Training Neural Networks": loss at init, overfit one batch, an
input-independent baseline, batch independence, same seed same numbers).

The checks read a bounded sample of the data (never a whole split) and train small models,
so before a sweep they run where a trial would: in a Ray task holding one trial's CPUs, GPUs
and memory, on a node that can hold a trial, not in the driver."""

from __future__ import annotations

from typing import Any

from runyard import workloads
from runyard.plan import trial_bundles
from runyard.spec import JobSpec, workload_context


def has_preflight(spec: JobSpec) -> bool:
    cls = workloads.get(spec.workload)
    return cls.preflight_checks.__func__ is not workloads.Workload.preflight_checks.__func__


def run_preflight(spec: JobSpec) -> list[Any] | None:
    """The workload's check results on the spec's base config, in this process; None when
    the workload has none."""
    cls = workloads.get(spec.workload)
    return cls.preflight_checks(cls.Config.model_validate(spec.config), workload_context(spec))


def run_preflight_as_trial(spec: JobSpec) -> list[Any] | None:
    """`run_preflight` in a Ray task with the resources of one trial's own process (its first
    placement-group bundle)."""
    import ray

    trial = dict(trial_bundles(spec)[0])
    options: dict[str, Any] = {"num_cpus": trial.pop("CPU", 1), "num_gpus": trial.pop("GPU", 0)}
    if "memory" in trial:
        options["memory"] = trial.pop("memory")
    if trial:
        options["resources"] = trial
    return ray.get(ray.remote(run_preflight).options(**options).remote(spec))
