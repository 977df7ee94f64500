"""What a trial process is told about its trial: the contract between the driver, which plans
the trials, and the trainable that Tune runs in another process.

Tune carries a trial's config as plain data (it writes it into its experiment state as JSON,
which `runyard explain` reads back), so the payload travels as a dict under the config key
`trial`; every reader goes through `TrialPayload.of(config)` and gets typed fields, never
string keys: its spec blocks arrive as the typed models of runyard.workloads.blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from runyard.plan import Trial
from runyard.workloads.blocks import (BLOCKS, DigitsData, EnvironmentSpec, EnvSpec, ResourcesSpec,
                                     RolloutSpec,
                                     ShardsData, as_block)

CONFIG_KEY = "trial"


@dataclass(frozen=True)
class StopConditions:
    """The spec's `stop:` block: whichever condition is met first ends the trial."""

    iterations: int | None = None
    time_s: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # metric -> value to reach

    def reached(self, directions: Mapping[str, str], iteration: int, elapsed_s: float,
                metrics: Mapping[str, float]) -> bool:
        """Whether a trial that just finished `iteration` should end."""
        if self.iterations is not None and iteration >= self.iterations:
            return True
        if self.time_s is not None and elapsed_s >= self.time_s:
            return True
        for name, threshold in self.thresholds.items():
            value = metrics.get(name)
            if value is None:
                continue
            if (value >= threshold) if directions[name] == "max" else (value <= threshold):
                return True
        return False


@dataclass(frozen=True)
class Exploit:
    """One exploit step of a population-based sweep's member: after its iteration
    `iteration` it went on from `donor`'s checkpoint (taken after the donor's iteration
    `donor_iteration`) with the donor's hyperparameters, perturbed. Values by dotted key."""

    iteration: int
    donor: str  # the donor's runyard trial id
    donor_iteration: int
    checkpoint: str  # the donor's checkpoint the member restored
    before: dict[str, Any]  # the member's own values until then
    copied: dict[str, Any]  # the donor's values
    after: dict[str, Any]  # what the member trains with from then on


@dataclass(frozen=True)
class TrialTracking:
    """Where the trial's run is: what a program that logs to MLflow itself is handed."""

    uri: str  # the job's tracking URI
    # A plain job's run (its trial's run), or a sweep's parent run; "" for a new job, whose
    # driver makes that run while Tune starts: the trial finds its run by job and trial id.
    job_run_id: str
    sweep: bool  # a sweep's trial has a child run of its own under job_run_id
    job_id: str = ""  # runyard's id of the job (the JOB_ID tag of all its runs)
    experiment: str = ""  # the MLflow experiment the job's runs are in


@dataclass(frozen=True)
class TrialPayload:
    trial_id: str  # runyard's id (t0000 ...), which keys the trial's MLflow run
    index: int  # position in the job's trial list
    sample: int  # which sampled config; its seeds share it
    label: str  # the swept values and seed, e.g. "x=0.3,seed=1"
    seed: int
    workload: str
    config: dict[str, Any]  # the workload's config, swept values filled in
    env: EnvSpec | None  # the spec's blocks
    data: DigitsData | ShardsData | None
    rollout: RolloutSpec | None
    resources: ResourcesSpec
    stop: StopConditions
    workdir: str  # the job's working dir (the project, on a cluster its submitted copy)
    checkpoint_every: int
    checkpoint_keep: int
    storage: str  # where a data-parallel trial's Ray Train run keeps its state
    system_metrics_s: float | None = None  # seconds between system samples (None: none)
    environment: EnvironmentSpec | None = None  # the spec's block
    tracking: TrialTracking | None = None  # None: a trial built without a driver (tests)
    overrides: dict[str, Any] = field(default_factory=dict)  # the swept values (dotted keys)
    # A population-based sweep's member: each time it copied another member, oldest first.
    # Kept in the config because Tune saves the config with its experiment: a resumed sweep
    # has every member's history.
    exploits: tuple[Exploit, ...] = ()

    def __post_init__(self) -> None:
        # Tune hands the blocks back as the plain data `as_config` made of them.
        for key in BLOCKS:
            object.__setattr__(self, key, as_block(key, getattr(self, key)))
        object.__setattr__(self, "exploits", tuple(
            e if isinstance(e, Exploit) else Exploit(**e) for e in self.exploits))

    def as_config(self) -> dict[str, Any]:
        """The trial's Tune config: plain data, the blocks dumped as JSON would hold them."""
        fields = asdict(self)
        for key in BLOCKS:
            block = getattr(self, key)
            fields[key] = None if block is None else block.model_dump(mode="json")
        return {CONFIG_KEY: fields}

    def as_trial(self) -> Trial:
        """The planned trial this payload was made from."""
        return Trial(self.index, self.trial_id, self.seed, self.sample, dict(self.overrides),
                     dict(self.config))

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> TrialPayload:
        """The payload in a Tune config (a trial's `config`, or what a trainable receives)."""
        fields = dict(config[CONFIG_KEY])
        fields["stop"] = StopConditions(**fields["stop"])
        if fields.get("tracking") is not None:
            fields["tracking"] = TrialTracking(**fields["tracking"])
        return cls(**fields)
