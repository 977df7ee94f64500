"""Population-based training (`sweep.search: pbt`): Tune's PopulationBasedTraining over
populations of runyard trials, whose members keep who they are when they copy each other.

The plan is a random sweep's (plan/trials.py): `samples` configs drawn by runyard, each on
`seeds` seeds. Config `s` on seed number `k` is member `s` of population `k`, so the k
populations start from the same configs and differ in their seeds only; each population
exploits only within itself, and the sweep's result is the mean over populations of each
one's best member (`runyard best`). Tune's PBT would treat every trial as one population, so
`Populations` routes each trial to a PBT of its own population.

An exploit, in Tune's terms: a member in the bottom `quantile` of its population, at an
interval, pauses, takes a top member's (the donor's) newest checkpoint and its
hyperparameters, perturbed, and goes on. Tune hands the member the donor's whole config;
`keep_member` keeps the member's own payload (trial id, seed, run) instead, with the
perturbed values (kept within their dimension's bounds) and the exploit appended to its
`exploits`: that history travels with the trial's config, which Tune saves with the
experiment, so the MLflow side (tracking_callback.py, records.py) can read it at any time.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace
from typing import Any

from ray import tune
from ray.tune.experiment import Trial as TuneTrial
from ray.tune.schedulers import FIFOScheduler

from runyard.execute.payload import CONFIG_KEY, Exploit, TrialPayload
from runyard.execute.planned import population_of
from runyard.ray_compat import ExploitFacts, population_based_training
from runyard.spec import JobSpec, set_dotted
from runyard.spec.schema import Distribution


class Populations(FIFOScheduler):
    """One Tune PBT per population, each seeing only its own members."""

    def __init__(self, spec: JobSpec):
        super().__init__()
        sweep = spec.sweep
        self.seeds = sweep.seeds
        keep = functools.partial(keep_member, sweep.space)
        self.populations = [
            population_based_training(
                keep, time_attr="training_iteration", metric=sweep.metric, mode=sweep.mode,
                perturbation_interval=sweep.pbt.interval,
                hyperparam_mutations=mutations(sweep.space),
                quantile_fraction=sweep.pbt.quantile,
                resample_probability=sweep.pbt.resample_probability,
                perturbation_factors=tuple(sweep.pbt.factors))
            for _ in range(self.seeds)]
        # PBT draws its perturbations from Python's `random`: seeded, a sweep whose events
        # come in the same order explores the same way.
        random.seed(spec.seed)

    def _of(self, trial: TuneTrial) -> FIFOScheduler:
        return self.populations[population_of(TrialPayload.of(trial.config), self.seeds)]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return all(p.set_search_properties(metric, mode, **spec) for p in self.populations)

    def on_trial_add(self, tune_controller: Any, trial: TuneTrial) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: TuneTrial, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: TuneTrial, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: TuneTrial) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: TuneTrial) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> TuneTrial | None:
        """The waiting member that has trained least, so that members (more of them than
        fit at once) take turns and meet at the intervals, as Tune's PBT schedules one
        population."""
        waiting = [t for t in tune_controller.get_trials()
                   if t.status in (TuneTrial.PENDING, TuneTrial.PAUSED)]
        return min(waiting, key=lambda t: t.last_result.get("training_iteration", 0),
                   default=None)

    def debug_string(self) -> str:
        return "; ".join(p.debug_string() for p in self.populations)


def mutations(space: dict[str, Distribution]) -> dict[str, Any]:
    """Tune's `hyperparam_mutations` for the space, at the place each value has in a trial's
    config. Numbers are multiplied by a factor or resampled (a log-uniform dimension
    resampled on its log scale; multiplying is a step in log space already), choices moved
    to a neighbour or resampled."""
    tree: dict[str, Any] = {}
    for key, dimension in space.items():
        if dimension.kind == "choice":
            domain: Any = list(dimension.args)
        else:  # uniform, loguniform, randint (the spec refuses grid dimensions for pbt)
            domain = getattr(tune, dimension.kind)(*dimension.args)
        node = tree.setdefault(CONFIG_KEY, {}).setdefault("config", {})
        *parents, leaf = key.removeprefix("config.").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = domain
    return tree


def keep_member(space: dict[str, Distribution], member_config: dict[str, Any],
                perturbed_config: dict[str, Any], facts: ExploitFacts) -> dict[str, Any]:
    """The config an exploiting member goes on with: its own payload, with the perturbed
    donor's hyperparameters (within bounds) and the exploit recorded."""
    member = TrialPayload.of(member_config)
    donor = TrialPayload.of(facts.donor_config)
    perturbed = TrialPayload.of(perturbed_config)
    after = {key: within_bounds(dimension, dotted(perturbed.config, key))
             for key, dimension in space.items()}
    config = dict(member.config)
    for key, value in after.items():
        config = set_dotted(config, key.removeprefix("config."), value)
    exploit = Exploit(iteration=facts.member_iteration, donor=donor.trial_id,
                      donor_iteration=facts.donor_iteration, checkpoint=facts.checkpoint,
                      before=dict(member.overrides), copied=dict(donor.overrides), after=after)
    return replace(member, config=config, overrides=after,
                   exploits=member.exploits + (exploit,)).as_config()


def within_bounds(dimension: Distribution, value: Any) -> Any:
    """A perturbed value moved back inside its dimension (Tune's factors overshoot)."""
    if dimension.kind in ("uniform", "loguniform"):
        low, high = dimension.args
        return float(min(max(value, low), high))
    if dimension.kind == "randint":  # high is exclusive, as in plan.trials.draw
        low, high = dimension.args
        return int(min(max(value, low), high - 1))
    return value


def dotted(config: dict[str, Any], key: str) -> Any:
    """The value at a dotted space key (config.a.b) in a workload config."""
    value: Any = config
    for part in key.removeprefix("config.").split("."):
        value = value[part]
    return value


def hyperparameter_metrics(space: dict[str, Distribution], values: dict[str, Any]
                           ) -> dict[str, float]:
    """The hyperparameters a member trained an iteration with, as MLflow metrics named
    after the dimension (config.lr): numbers as they are, a choice as its position in the
    list (MLflow metrics are numbers; the list is in the spec)."""
    metrics = {}
    for key, dimension in space.items():
        if key not in values:
            continue
        value = values[key]
        metrics[key] = float(dimension.args.index(value) if dimension.kind == "choice" else value)
    return metrics
