"""Layer 1 — spec: YAML job spec → validated, immutable JobSpec."""

from runyard.spec.loader import Problem, SpecError, load_spec, set_dotted, workload_context
from runyard.spec.schema import JobSpec

__all__ = ["JobSpec", "Problem", "SpecError", "load_spec", "set_dotted", "workload_context"]
