"""The job spec schema: what a YAML job spec may say, as immutable pydantic models.

The workload's own `config:` keys are checked by the workload's schema (see loader.py); this
module checks the frame around it: names, stop conditions, checkpointing, tracking and the
sweep. The blocks a workload is set up with (env, rollout, data, resources) are defined in
runyard.workloads.blocks, where workloads can read them too.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runyard.scope import Scope
from runyard.workloads.blocks import DataSpec, EnvironmentSpec, EnvSpec, ResourcesSpec, RolloutSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StopSpec(BaseModel):
    """When a trial ends: whichever comes first. Other keys are metric thresholds, met when
    the metric reaches the value in its better direction (>= for accuracy, <= for loss).
    Empty only for a workload that ends by itself (a program that exits): the spec's checks
    against the workload refuse it for any other."""

    model_config = ConfigDict(extra="allow", frozen=True)
    iterations: int | None = Field(None, ge=1)
    time_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _thresholds_are_numbers(self) -> StopSpec:
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"stop.{key}: a metric threshold must be a number, found {value!r}")
        return self

    @property
    def empty(self) -> bool:
        return self.iterations is None and self.time_s is None and not self.model_extra

    @property
    def thresholds(self) -> dict[str, float]:
        return {key: float(value) for key, value in (self.model_extra or {}).items()}


class CheckpointSpec(Strict):
    every: int = Field(0, ge=0, description="checkpoint every N iterations (0: only at the end)")
    keep: int = Field(2, ge=1, description="checkpoints kept per trial")


SYSTEM_METRICS_EVERY_S = 10.0


class TrackingSpec(Strict):
    experiment: str | None = Field(None, description="MLflow experiment (default: the spec name)")
    tags: dict[str, str] = Field(default_factory=dict)
    system_metrics: bool | float = Field(
        SYSTEM_METRICS_EVERY_S,
        description="seconds between samples of each trial's CPU, memory and GPU use, logged "
                    "as system/* metrics of its run (true: every 10 s); false: none")

    @field_validator("system_metrics", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> bool | float:
        if value is True:
            return SYSTEM_METRICS_EVERY_S
        if value is False:
            return value
        if not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError("give seconds between samples (> 0), e.g. 10, or false for none; "
                             f"found {value!r}")
        return float(value)


class Distribution(Strict):
    """One search dimension: exactly one of the keys below."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [name for name in self.model_fields_set if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "write exactly one of uniform: [low, high], loguniform: [low, high], "
                f"randint: [low, high], choice: [...], grid: [...]; found {given or 'none'}"
            )
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("choice", "grid") and not value:
            raise ValueError(f"{kind}: the list is empty; give at least one value")
        if kind in ("uniform", "loguniform", "randint") and not value[0] < value[1]:
            raise ValueError(f"{kind}: low must be below high, found [{value[0]}, {value[1]}]")
        if kind == "loguniform" and value[0] <= 0:
            raise ValueError(f"loguniform: both bounds must be > 0, found [{value[0]}, {value[1]}]")
        if kind in ("uniform", "loguniform") and not all(math.isfinite(v) for v in value):
            raise ValueError(f"{kind}: bounds must be finite numbers")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in ("uniform", "loguniform", "randint", "choice", "grid")
                    if getattr(self, name) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)


class AshaSpec(Strict):
    grace: int = Field(1, ge=1, description="iterations every trial gets before it can be stopped")
    max_t: int = Field(100, ge=1)
    reduction_factor: float = Field(3, gt=1)


class MedianSpec(Strict):
    grace: int = Field(1, ge=1)


class SchedulerSpec(Strict):
    asha: AshaSpec | None = None
    median: MedianSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> SchedulerSpec:
        if (self.asha is None) == (self.median is None):
            raise ValueError("give exactly one scheduler: asha: {...} or median: {...}")
        return self


class PbtSpec(Strict):
    """Population-based training: every `interval` iterations a member in the bottom
    `quantile` of its population copies a top member's checkpoint and hyperparameters, then
    perturbs them (Ray Tune's PopulationBasedTraining; the defaults are Tune's)."""

    interval: int = Field(ge=1, description="iterations between a member's exploit/explore steps")
    quantile: float = Field(0.25, gt=0, le=0.5,
                            description="fraction of the population that copies (bottom) and "
                                        "is copied (top)")
    resample_probability: float = Field(0.25, ge=0, le=1,
                                        description="chance that a copied value is drawn afresh "
                                                    "from its dimension instead of perturbed")
    factors: tuple[float, float] = Field((1.2, 0.8),
                                         description="a perturbed numeric value is multiplied "
                                                     "by one of these")

    @field_validator("factors")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(f) and f > 0 for f in value):
            raise ValueError(f"both factors must be positive numbers, found {list(value)}")
        return value


class SweepSpec(Strict):
    search: Literal["random", "grid", "tpe", "pbt"] = Field(
        "random", description="random: configs drawn up front; grid: every grid/choice point; "
                              "tpe: each config proposed by Optuna's TPE from the seed means so "
                              "far; pbt: a population whose members copy and perturb the best "
                              "ones while they train")
    samples: int = Field(1, ge=1, description="configs drawn or proposed (per grid point); "
                                              "pbt: the population's size")
    startup: int | None = Field(
        None, ge=1, description="tpe: configs drawn at random before TPE models the results "
                                "(default: a quarter of samples, at least 2)")
    seeds: int = Field(1, ge=1, description="seeds per config; the objective is their mean "
                                            "(pbt: independent populations, one per seed)")
    metric: str
    mode: Literal["max", "min"] | None = Field(None, description="default: the metric's direction")
    scope: str = Field(
        "last", description="which of a trial's reports score it (Ray Tune's names): last; all "
                            "(its best, in the metric's direction); last-N-avg (the mean of its "
                            "last N)")
    space: dict[str, Distribution]
    scheduler: SchedulerSpec | None = None
    pbt: PbtSpec | None = None
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="retries of a failed trial from its checkpoint")
    time_budget_s: float | None = Field(
        None, gt=0, description="the sweep's time budget: when it runs out, running trials end "
                                "where they are (FINISHED) and trials not yet started never start")

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Distribution]) -> dict[str, Distribution]:
        if not value:
            raise ValueError("the search space is empty; add at least one dimension, "
                             "e.g. config.lr: {loguniform: [1.0e-4, 1.0e-1]}")
        for key in value:
            if not key.startswith("config.") or key == "config.":
                raise ValueError(f"space key {key!r} must name a config field, e.g. config.lr")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        Scope.parse(value)
        return value

    @property
    def objective_scope(self) -> Scope:
        return Scope.parse(self.scope)

    @model_validator(mode="after")
    def _search(self) -> SweepSpec:
        if self.search == "tpe":
            grid_dims = [k for k, d in self.space.items() if d.kind == "grid"]
            if grid_dims:
                raise ValueError(f"search: tpe proposes every dimension; {grid_dims} are grid "
                                 "dimensions: give them as choice: [...]")
            if self.scheduler is not None:
                raise ValueError("search: tpe learns from each config's final seed mean, and a "
                                 "scheduler would feed it early-stopped values: drop scheduler, "
                                 "or use search: random with it")
        elif self.startup is not None:
            raise ValueError(f"startup applies to search: tpe only (this sweep is {self.search})")
        if self.search == "pbt" and self.pbt is None:
            raise ValueError("search: pbt needs a pbt: block saying how often members are "
                             "compared, e.g. pbt: {interval: 5}")
        if self.search == "pbt" and self.scope != "last":
            raise ValueError(f"scope: {self.scope}: a population-based sweep compares its members "
                             "by their last report, as Tune's PBT does: drop scope, or use "
                             "search: random or tpe")
        if self.search != "pbt" and self.pbt is not None:
            raise ValueError(f"the pbt: block applies to search: pbt only (this sweep is "
                             f"{self.search}): remove it, or write search: pbt")
        if self.search == "grid":
            random_dims = [k for k, d in self.space.items() if d.kind not in ("grid", "choice")]
            if random_dims:
                raise ValueError(
                    f"search: grid enumerates grid/choice dimensions only; {random_dims} are "
                    "random: use search: random, or give them as grid: [...]"
                )
        return self

    @property
    def startup_samples(self) -> int:
        """tpe: how many configs are drawn at random before TPE takes over."""
        return min(self.samples, self.startup or max(2, self.samples // 4))


class JobSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    workload: str
    description: str | None = None
    seed: int = Field(0, ge=0)
    env: EnvSpec | None = None
    data: DataSpec | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    rollout: RolloutSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    environment: EnvironmentSpec | None = None
    stop: StopSpec = Field(default_factory=StopSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    sweep: SweepSpec | None = None

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def adaptive(self) -> bool:
        """Whether the sweep's configs are proposed while it runs (search: tpe), not drawn
        before it starts."""
        return self.sweep is not None and self.sweep.search == "tpe"

    @property
    def population_based(self) -> bool:
        """Whether the sweep's configs change while its trials train (search: pbt)."""
        return self.sweep is not None and self.sweep.search == "pbt"

    def as_plain(self) -> dict[str, Any]:
        """The resolved spec as plain data (what `runyard validate --show` prints)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def hash(self) -> str:
        """Identifies the resolved spec: equal specs, however written, hash equal."""
        text = json.dumps(self.as_plain(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]
