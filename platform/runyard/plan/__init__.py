"""Layer 2 — plan: a JobSpec → its trials, each checked against the target cluster before any
of them starts."""

from runyard.plan.resources import (check_feasible, cluster_config_nodes, fits, trial_bundles,
                                    trial_request)
from runyard.plan.trials import Trial, expand

__all__ = ["Trial", "check_feasible", "cluster_config_nodes", "expand", "fits", "trial_bundles",
           "trial_request"]
