"""How a trial's CPUs are shared between its own process and its rollout actors.

The rollout actors live inside the trial's CPU budget (`resources.cpus_per_trial`) instead of
adding to it: sampling and learning alternate, so while the actors step envs the trial's
process only waits, and while it learns the actors are idle. A spec that runs on a 2-core
laptop therefore asks for 2 CPUs, not 2 + one per actor.

  backend ray (default): W actors of `cpus_per_worker` CPUs each (1 unless given); the trial's
      process keeps what is left, at least DRIVER_CPUS. `workers: auto` makes W as many
      actors as the budget holds. W x cpus_per_worker above the budget is an error.
  backend local: the workers run one after another inside the trial's process, which holds
      the whole budget; `workers: auto` is 1 there.
  backend processes: each worker is a process the trial starts (one emulator thread and one
      torch thread each); they sample while the trial's process waits, within the trial's
      budget, so `workers: auto` is one per CPU of it.

This module imports nothing heavy: the planner sizes placement groups with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from runyard.workloads.blocks import RolloutSpec

# What the trial's own process reserves when its actors take the rest: it only waits on them
# while they sample, and learns while they are idle.
DRIVER_CPUS = 0.01


@dataclass(frozen=True)
class RolloutLayout:
    """The resolved rollout block: how many workers, where, and with how many CPUs each."""

    backend: str  # "ray", "local" or "processes"
    workers: int
    envs_per_worker: int
    cpus_per_worker: float  # what each actor's bundle reserves (ray), the trial's CPUs (local), 1 (processes)
    driver_cpus: float  # what the trial's own process keeps

    @property
    def threads_per_worker(self) -> int:
        """Emulator threads a worker runs: one per CPU it holds, at least one."""
        return max(1, int(round(self.cpus_per_worker)))


class LayoutError(ValueError):
    """A rollout block that cannot fit its trial's CPUs; the message names field and fix."""


def resolve_layout(rollout: RolloutSpec | None, cpus_per_trial: float) -> RolloutLayout:
    """The rollout block (None: its defaults) resolved against the trial's CPUs."""
    rollout = rollout or RolloutSpec()
    envs, requested = rollout.envs_per_worker, rollout.workers
    if rollout.backend == "local":
        workers = 1 if requested == "auto" else requested
        return RolloutLayout("local", workers, envs, float(cpus_per_trial), float(cpus_per_trial))
    if rollout.backend == "processes":
        workers = max(1, math.floor(cpus_per_trial + 1e-9)) if requested == "auto" else requested
        return RolloutLayout("processes", workers, envs, 1.0, float(cpus_per_trial))
    per_worker = float(rollout.cpus_per_worker)
    if requested == "auto":
        workers = max(1, math.floor((cpus_per_trial + 1e-9) / per_worker))
        per_worker = min(per_worker, float(cpus_per_trial))
    else:
        workers = requested
    if workers * per_worker > cpus_per_trial + 1e-9:
        raise LayoutError(
            f"rollout.workers: {workers} actors x rollout.cpus_per_worker {per_worker:g} = "
            f"{workers * per_worker:g} CPUs, more than resources.cpus_per_trial = {cpus_per_trial:g}. "
            "Rollout actors share the trial's CPUs; raise resources.cpus_per_trial, lower "
            "rollout.workers or rollout.cpus_per_worker, or say rollout.workers: auto"
        )
    driver = cpus_per_trial - workers * per_worker
    if driver < DRIVER_CPUS:
        # The actors fill the budget: each gives up a sliver so the trial's process fits too.
        per_worker = (cpus_per_trial - DRIVER_CPUS) / workers
        driver = DRIVER_CPUS
    return RolloutLayout("ray", workers, envs, per_worker, driver)
