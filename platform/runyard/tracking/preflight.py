"""A preflight's results as an MLflow run of its own (kind `preflight`): a metric and a
pass/FAIL tag per check, and the table as preflight.tsv."""

from __future__ import annotations

from typing import Any

from runyard.tracking.store import JobTracking
from runyard.tracking.tags import KIND, PREFLIGHT_CHECK, SPEC_HASH, SPEC_NAME, WORKLOAD


def record_preflight(uri: str, spec: Any, checks: list[Any]) -> str:
    """Log the checks of `spec` (a JobSpec) into a new run; returns its id. The run ends
    FINISHED when every check passed, FAILED otherwise."""
    tracking = JobTracking(uri, spec.experiment)
    run = tracking.start_run(f"{spec.name}-preflight",
                             {KIND: "preflight", SPEC_NAME: spec.name,
                              SPEC_HASH: spec.hash, WORKLOAD: spec.workload},
                             {"workload": spec.workload})
    writer = tracking.writer
    writer.log_metrics(run, {f"preflight_{c.name}": c.measured for c in checks}, step=0)
    writer.set_tags(run, {PREFLIGHT_CHECK.format(check=c.name): "pass" if c.passed else "FAIL"
                          for c in checks})
    report = "\n".join(f"{c.name}\t{'pass' if c.passed else 'FAIL'}\t{c.measured:.6g}\t"
                       f"{c.expected}\t{c.explanation}" for c in checks)
    writer.log_text(run, "check\tresult\tmeasured\texpected\texplanation\n" + report,
                    "preflight.tsv")
    writer.end_run(run, "FINISHED" if all(c.passed for c in checks) else "FAILED")
    tracking.close()
    return run.id
