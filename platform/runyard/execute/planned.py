"""A job's trials, and a population's exploits, as its ledger and storage hold them, read
without Ray Tune or MLflow: the driver plans from them, and `best`, `explain` and `submit`
read them back, which should not pay for importing Tune (seconds) to do so."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runyard.execute.ledger import Ledger
from runyard.execute.payload import Exploit, TrialPayload
from runyard.plan import Trial, expand
from runyard.plan.trials import grid_size
from runyard.ray_compat import experiment_trials
from runyard.spec import JobSpec
from runyard.spec.loader import validate_data
from runyard.spec.yamlpos import Origin


def new_job_id(spec: JobSpec) -> str:
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_ledger_spec(ledger: Ledger) -> JobSpec:
    return validate_data(dict(ledger.spec), {}, Origin(str(ledger.path)))


def planned_trials(ledger: Ledger, as_ended: bool = False) -> list[Trial]:
    """Every trial the job has, across its segments (of a TPE sweep: those proposed so far;
    of a population-based one with `as_ended`, its members with the configs they ended with)."""
    spec = load_ledger_spec(ledger)
    if spec.sweep is None:
        return expand(spec)
    if spec.adaptive or (spec.population_based and as_ended):
        return [t for segment in ledger.segments for t in saved_trials(segment.tune_path)]
    trials = []
    for segment in ledger.segments:
        sized = spec.model_copy(update={"sweep": spec.sweep.model_copy(
            update={"samples": segment.samples // grid_size(spec)})})
        trials += expand(sized, first_sample=segment.first_sample)
    return trials


def saved_trials(tune_path: str) -> list[Trial]:
    """The trials of a segment as Tune's newest experiment state has them: of a TPE segment,
    those proposed so far; of a population-based one, each member with the config it has
    now (a member's config changes as it trains)."""
    trials = [TrialPayload.of(trial["config"]).as_trial() for trial, _ in experiment_trials(tune_path)]
    return sorted(trials, key=lambda t: t.index)


def population_of(payload: TrialPayload, seeds: int) -> int:
    """Which population a trial is a member of: its seed's number (plan.trial_of numbers
    trials sample by sample, seed by seed)."""
    return payload.index % seeds


@dataclass(frozen=True)
class MemberExploit:
    """An exploit with the member that made it: one entry of a sweep's lineage."""

    member: str  # the member's runyard trial id
    population: int
    iteration: int
    donor: str
    donor_iteration: int
    checkpoint: str
    before: dict[str, Any]
    copied: dict[str, Any]
    after: dict[str, Any]

    @classmethod
    def of(cls, payload: TrialPayload, population: int, exploit: Exploit) -> MemberExploit:
        return cls(member=payload.trial_id, population=population, **asdict(exploit))


def lineage(tune_paths: Sequence[str], seeds: int) -> list[MemberExploit]:
    """Every exploit of the sweep's members, from Tune's newest saved state of each
    experiment, by iteration, then member."""
    exploits = []
    for tune_path in tune_paths:
        for trial, _ in experiment_trials(tune_path):
            payload = TrialPayload.of(trial["config"])
            exploits += [MemberExploit.of(payload, population_of(payload, seeds), e)
                         for e in payload.exploits]
    return sorted(exploits, key=lambda e: (e.iteration, e.member))
