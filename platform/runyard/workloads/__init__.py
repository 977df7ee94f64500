"""Workload registry: a spec's `workload:` key names a class here.

Entries are import paths, so looking up one workload never imports the others (torch for
the supervised ones, gymnasium and ALE for the RL ones).
"""

from __future__ import annotations

import importlib
import importlib.util

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext

REGISTRY: dict[str, str] = {
    "sl.linear": "runyard.workloads.sl.linear:LinearClassifier",
    "sl.convnet": "runyard.workloads.sl.convnet:ConvNetClassifier",
    "toy.quadratic": "runyard.workloads.toy:Quadratic",
    "rl.pg": "runyard.workloads.rl.pg:PolicyGradient",
    "rl.trpo": "runyard.workloads.rl.trpo:TRPO",
    "rl.cem": "runyard.workloads.rl.cem:CrossEntropyMethod",
    "command": "runyard.workloads.command:Command",
}


def available() -> list[str]:
    """Registered workload names whose module is importable, sorted."""
    names = []
    for name, target in REGISTRY.items():
        module_name = target.split(":")[0]
        if importlib.util.find_spec(module_name) is not None:
            names.append(name)
    return sorted(names)


def get(name: str) -> type[Workload]:
    """The workload class registered as `name`; KeyError if there is none.

    `rllib.<ALGO>` (rllib.PPO, rllib.IMPALA, rllib.DQN ...) is RLlib's algorithm ALGO, run as a
    baseline workload (runyard.workloads.rl.rllib_baseline)."""
    if name.startswith("rllib."):
        from runyard.workloads.rl.rllib_baseline import workload_for

        return workload_for(name.removeprefix("rllib."))
    if name not in available():
        raise KeyError(name)
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["REGISTRY", "Workload", "WorkloadConfig", "WorkloadContext", "available", "get"]
