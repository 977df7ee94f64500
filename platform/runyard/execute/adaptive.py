"""Adaptive search (`sweep.search: tpe`): configs proposed by Optuna's TPE while the sweep runs,
each judged once, on the mean over its seeds.

A random or grid sweep has every trial drawn before Tune starts (plan/trials.py). A TPE sweep
knows only how many configs it will try; Tune asks this searcher for a trial whenever one can
start (one pending trial at a time for a searcher, so each proposal sees the results before
it). The chain, outermost first:

  ProposedTrials  turns each proposal into runyard's trial: the next trial id and sample
                  number, the seed (the job's seed + the seed's index), the whole TrialPayload
  Repeater        (Tune's) hands each config out `seeds` times and, once all of its seeds
                  have ended, tells the searcher one value: their mean (np.nanmean of each
                  seed's score, which ProposedTrials puts in the metric's place of the seed's
                  final result: its reports summed up by the sweep's scope, the objective
                  `runyard best` ranks by)
  OptunaSearch    (Tune's) asks Optuna's TPE sampler for a config and tells it that mean

Tune saves the chain with its experiment state (each wrapper's `get_state`, Optuna's study
pickled), so a restored sweep goes on with the same study and the same trial numbering. An
extended sweep starts a new study, told every config the sweep has judged so far.
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Repeater, Searcher
from ray.tune.search.repeater import TRIAL_INDEX

from runyard.errors import UserError
from runyard.execute.payload import TrialPayload
from runyard.plan import Trial
from runyard.plan.trials import trial_of
from runyard.ray_compat import experiment_trials
from runyard.spec import JobSpec
from runyard.spec.schema import Distribution


@dataclass(frozen=True)
class JudgedConfig:
    """A config that an earlier segment of the sweep ran, with its seed mean."""

    overrides: dict[str, Any]  # dotted key -> value
    value: float


class ProposedTrials(Searcher):
    """Tune's searcher for a TPE segment: numbers and seeds the configs TPE proposes."""

    def __init__(self, spec: JobSpec, first_sample: int, payload_of: Callable[[Trial], TrialPayload],
                 judged: Sequence[JudgedConfig] = ()):
        sweep = spec.sweep
        super().__init__(metric=sweep.metric, mode=sweep.mode)
        self.spec = spec
        self.payload_of = payload_of
        self.next_sample = first_sample
        self.proposed: set[str] = set()  # Tune's ids of the trials this searcher made
        self.scope = sweep.objective_scope
        # Tune's trial id -> {iteration: value}: the reports its scope still needs, kept from
        # Tune's result stream, since a trial's final result holds its last report alone.
        self.reports: dict[str, dict[int, float]] = {}
        self.codec = SpaceCodec(sweep.space)
        self.searcher = Repeater(_tpe(spec, first_sample, self.codec, judged), repeat=sweep.seeds)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        proposal = self.searcher.suggest(trial_id)
        if proposal is None or proposal == Searcher.FINISHED:
            return proposal
        seed_index = proposal.pop(TRIAL_INDEX)
        if seed_index == 0:  # a new config: the Repeater hands out its seeds one after another
            self.next_sample += 1
        sample = self.next_sample - 1
        trial = trial_of(self.spec, sample, seed_index, self.codec.decode(proposal))
        self.proposed.add(trial_id)
        return self.payload_of(trial).as_config()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        metric = self.metric
        if not self.scope.needs_history or trial_id not in self.proposed or metric not in result:
            return
        reports = self.reports.setdefault(trial_id, {})
        reports[int(result["training_iteration"])] = float(result[metric])
        self.reports[trial_id] = self.scope.kept(reports, self.mode)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # Tune writes its trials' state a moment before this searcher's: a driver killed in
        # between restores a trial that this (older) state never proposed. Its value is
        # left out of the study rather than failing the sweep.
        if trial_id not in self.proposed:
            return
        reports = self.reports.pop(trial_id, None)
        if result is not None and reports:
            result = {**result, self.metric: self.scope.score(
                [reports[i] for i in sorted(reports)], self.mode)}
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # metric, mode and space come from the spec; Tune's param_space is empty

    # Tune saves and restores a wrapper's own fields through get_state/set_state, and the
    # innermost searcher (Optuna's) through save/restore; see SearchGenerator.save_to_dir.
    def get_state(self) -> dict[str, Any]:
        return {"next_sample": self.next_sample, "proposed": sorted(self.proposed),
                "reports": self.reports}

    def set_state(self, state: dict[str, Any]) -> None:
        self.next_sample = state["next_sample"]
        self.proposed = set(state["proposed"])
        self.reports = state.get("reports", {})  # a state saved before scopes had none


def check_restorable(tune_path: str) -> None:
    """UserError unless Tune saved the searcher of a TPE segment that has trials: without
    it, a restored study would propose again from its first trial id."""
    from pyarrow import fs

    trials = list(experiment_trials(tune_path))
    filesystem, folder = fs.FileSystem.from_uri(str(tune_path))
    names = [posixpath.basename(info.path)
             for info in filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True))]
    if trials and not fnmatch.filter(names, Searcher.CKPT_FILE_TMPL.format("*")):
        raise UserError(
            f"{tune_path}: the TPE searcher's saved state is missing (Tune writes it beside "
            f"the {len(trials)} trials it proposed), so its study cannot go on where it was. "
            "`runyard extend JOB --samples N` starts a new study from every config judged so far.")


def judged_configs(trials: Sequence[Trial], values: dict[int, float]) -> list[JudgedConfig]:
    """The configs of `trials` that have a seed mean in `values` (sample -> mean)."""
    seen: dict[int, JudgedConfig] = {}
    for trial in trials:
        if trial.sample in values and trial.sample not in seen:
            seen[trial.sample] = JudgedConfig(dict(trial.overrides), values[trial.sample])
    return list(seen.values())


def _tpe(spec: JobSpec, first_sample: int, codec: SpaceCodec,
         judged: Sequence[JudgedConfig]) -> Searcher:
    import optuna  # imported here: only a TPE sweep's driver pays for it
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per told trial
    sweep = spec.sweep
    with warnings.catch_warnings():
        # multivariate and constant_liar are marked experimental; both are what a sweep
        # wants: dimensions that interact, and configs proposed while others still run.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            n_startup_trials=sweep.startup_samples, multivariate=True, constant_liar=True,
            seed=spec.seed * 100_003 + first_sample)  # an extension draws afresh
    known = [c for c in judged if c.value == c.value]  # NaN: every seed of it failed
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    return OptunaSearch(codec.distributions(), metric=sweep.metric, mode=sweep.mode,
                        sampler=sampler,
                        points_to_evaluate=[codec.encode(c.overrides) for c in known] or None,
                        evaluated_rewards=[c.value for c in known] or None)


class SpaceCodec:
    """runyard's search space as Optuna distributions, and proposals back as values. A
    choice becomes a categorical over its positions: Optuna's categories must be scalars,
    runyard's choices may be lists (layer widths), and TPE treats categories as unordered
    either way."""

    def __init__(self, space: dict[str, Distribution]):
        self.space = space

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        made = {}
        for key, dimension in self.space.items():
            kind, args = dimension.kind, dimension.args
            if kind == "uniform":
                made[key] = FloatDistribution(args[0], args[1])
            elif kind == "loguniform":
                made[key] = FloatDistribution(args[0], args[1], log=True)
            elif kind == "randint":  # high is exclusive, as in plan.trials.draw
                made[key] = IntDistribution(args[0], args[1] - 1)
            else:  # choice (the spec refuses grid dimensions for tpe)
                made[key] = CategoricalDistribution(list(range(len(args))))
        return made

    def decode(self, proposal: dict[str, Any]) -> dict[str, Any]:
        values = {}
        for key, dimension in self.space.items():
            value = proposal[key]
            if dimension.kind == "choice":
                value = dimension.args[int(value)]
            elif dimension.kind == "randint":
                value = int(value)
            else:
                value = float(value)
            values[key] = value
        return values

    def encode(self, overrides: dict[str, Any]) -> dict[str, Any]:
        encoded = {}
        for key, dimension in self.space.items():
            value = overrides[key]
            encoded[key] = dimension.args.index(value) if dimension.kind == "choice" else value
        return encoded
