"""The workload protocol: what every algorithm in runyard looks like to the layers above.

A workload is a small class. The executor calls `setup(config, context)` once, then `step()`
repeatedly (one iteration: an epoch, a policy update, a CEM generation), and `save(dir)` /
`restore(dir)` around checkpoints. It never imports Ray Tune or MLflow: parallel resources
(a rollout pool, a data loader) arrive through the `WorkloadContext`, with local in-process
defaults, so every workload runs and is tested standalone.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from runyard.workloads.blocks import (BLOCKS, DigitsData, EnvironmentSpec, EnvSpec, ResourcesSpec,
                                     RolloutSpec,
                                     ShardsData, as_block)

Direction = Literal["max", "min"]


class WorkloadConfig(BaseModel):
    """Base for a workload's own config schema: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class WorkloadContext:
    """What the executor hands a workload besides its config.

    seed: the trial's seed; every random stream in the workload derives from it.
    env: the spec's `env:` block (RL workloads), or None.
    data: the spec's `data:` block, digits or prepared shards (supervised workloads), or None.
    rollout: the spec's `rollout:` block, or None.
    resources: the spec's `resources:` block.
    environment: the spec's `environment:` block (the program's own packages), or None.
    The blocks are the typed models of runyard.workloads.blocks, defaults filled in; one
    given as plain data (in a test, a notebook) is validated into its model here.
    workdir: a directory the workload may write scratch files and artifacts into.
    parallel: executor-provided factories for parallel resources, keyed by name
        (for example "rollout_pool"); a workload falls back to its local implementation
        when a key is missing.
    """

    seed: int = 0
    env: EnvSpec | None = None
    data: DigitsData | ShardsData | None = None
    rollout: RolloutSpec | None = None
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    environment: EnvironmentSpec | None = None
    workdir: Path = field(default_factory=Path.cwd)
    parallel: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in BLOCKS:
            object.__setattr__(self, key, as_block(key, getattr(self, key)))


@dataclass(frozen=True)
class Iteration:
    """What `step()` may return instead of a plain dict, when an iteration's metrics belong to
    a step of the workload's own (a program's `global_step`) or come with other values.

    metrics: the iteration's metrics (a subset of `declared_metrics`), as a dict would be.
    step: the x value of these metrics in tracking (MLflow's step); None: the iteration's
        number.
    points: other values to track, each (step, {name: value}) at its own step (None: this
        iteration's step); they drive nothing, they are only recorded.
    recorded: the metrics are in the trial's run already (a program logged them itself):
        they drive stop conditions and the sweep, and are not recorded again.
    """

    metrics: dict[str, float]
    step: int | None = None
    points: tuple[tuple[int | None, dict[str, float]], ...] = ()
    recorded: bool = False


class WorkloadFinished(Exception):
    """Raised by `step()` when the workload has no further iteration to run (a program that
    ended by itself). The trial ends FINISHED after the iteration before, as if a stop
    condition had been met there; `points` are values reported after that iteration, still
    to be recorded (see Iteration)."""

    def __init__(self, points: tuple[tuple[int | None, dict[str, float]], ...] = ()):
        super().__init__()
        self.points = points


class Workload(abc.ABC):
    """One trainable algorithm.

    Class attributes a workload declares:
      Config:  its pydantic config schema (a WorkloadConfig subclass).
      metrics: every metric name `step()` reports, with the direction that is better.
               Specs are checked against it (sweep metric, stop conditions) before anything runs.
      blocks:  the spec blocks it reads besides `resources:` ("env", "rollout", "data"; the
               models are in runyard.workloads.blocks); a spec that writes another is refused.
      ends_by_itself: True when `step()` raises WorkloadFinished at its own end (a program
               that exits), so `stop:` may be left out.
               A workload whose metrics depend on its config overrides `declared_metrics`.
    """

    Config: ClassVar[type[WorkloadConfig]] = WorkloadConfig
    metrics: ClassVar[dict[str, Direction]] = {}
    blocks: ClassVar[tuple[str, ...]] = ()
    # Whether the workload can end its trial by itself (WorkloadFinished), so that a spec
    # without a stop condition still ends.
    ends_by_itself: ClassVar[bool] = False

    @classmethod
    def declared_metrics(cls, config: WorkloadConfig) -> dict[str, Direction]:
        """The metrics `step()` reports under this config, with the direction that is better:
        what the spec's checks, the stop conditions and tracking use. Default: `metrics`."""
        return cls.metrics

    @classmethod
    def check_spec(cls, config: WorkloadConfig, context: WorkloadContext) -> list[str]:
        """Problems with this config in this context (an env it cannot handle, a missing data
        path ...), found before anything starts. Each entry is `field: message`, where field
        is a dotted spec path such as `env.id` or `config.policy`. Default: none."""
        return []

    @classmethod
    def check_inputs(cls, config: WorkloadConfig, context: WorkloadContext) -> list[str]:
        """Problems that depend on this machine (a data path that does not exist here), checked
        at plan time by `runyard run`, not by `runyard validate`, so a spec written for a
        cluster still validates on a laptop. Same `field: message` form. Default: none."""
        return []

    @classmethod
    def helper_bundles(cls, config: WorkloadConfig) -> list[dict[str, float]]:
        """Resources of the processes this workload starts by itself (RLlib's env runners),
        one Ray placement-group bundle each, in the order it will use them; the trial
        reserves them after its own. Default: none."""
        return []

    @abc.abstractmethod
    def setup(self, config: WorkloadConfig, context: WorkloadContext) -> None:
        """Build model, optimizer, data or environments. Called once per trial."""

    @abc.abstractmethod
    def step(self) -> dict[str, float] | Iteration:
        """Run one iteration and return its metrics (a subset of `declared_metrics`, plain
        floats; an Iteration to give them a step of their own), or raise WorkloadFinished
        when there is no further iteration."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything needed to continue exactly where this iteration ended."""

    @abc.abstractmethod
    def restore(self, directory: Path) -> None:
        """Load what `save` wrote; the next `step()` must equal the uninterrupted one."""

    @classmethod
    def preflight_checks(cls, config: WorkloadConfig, context: WorkloadContext) -> list[Any] | None:
        """The Recipe's sanity checks on fresh models of this config and a bounded sample of
        its data (loss at init, overfit one batch, ...), each an object with name, passed,
        measured, expected, explanation; None for a workload that has none. Nothing is set
        up: run by `runyard preflight`, and before a sweep in a process of one trial's size."""
        return None

    def artifacts(self, directory: Path) -> None:
        """Write end-of-trial artifacts (plots, images) into `directory`. Default: none."""

    def close(self) -> None:
        """Release environments, worker processes, files. Default: nothing to release."""
