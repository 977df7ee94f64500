"""Expand a spec into its trials: one for a plain job, samples x grid points x seeds for a sweep
(for a TPE sweep, samples x seeds slots whose configs are proposed as it runs).

runyard samples the search space itself (not Ray Tune's searcher) so that a sweep's trials are
known, named and checked before anything starts, and so that sample i is the same whenever it
is drawn: its generator is seeded by (spec seed, i), which lets a sweep be extended later
without changing the trials it already has.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runyard.spec import JobSpec, set_dotted
from runyard.spec.schema import Distribution


@dataclass(frozen=True)
class Trial:
    index: int
    trial_id: str  # stable within a sweep: t0000, t0001, ...
    seed: int
    sample: int  # which sampled config (trials of one config on several seeds share it)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> sampled value
    config: dict[str, Any] = field(default_factory=dict)  # the workload config, resolved

    @property
    def label(self) -> str:
        """A run name that says what distinguishes this trial."""
        parts = [f"{key.removeprefix('config.')}={_format(value)}"
                 for key, value in self.overrides.items()]
        return ",".join(parts + [f"seed={self.seed}"]) if parts else f"seed={self.seed}"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace(" ", "")


def expand(spec: JobSpec, first_sample: int = 0) -> list[Trial]:
    """Every trial of the spec, in a fixed order; samples numbered from `first_sample`."""
    if spec.sweep is None:
        return [Trial(0, "t0000", spec.seed, 0, {}, dict(spec.config))]
    sweep = spec.sweep
    if sweep.search == "tpe":
        # Proposed while the sweep runs (execute/adaptive.py): known now are the slots, each
        # with its id and seed and, for the configs, the spec's own.
        samples = range(first_sample, first_sample + sweep.samples)
        return [trial_of(spec, sample, k, {}) for sample in samples for k in range(sweep.seeds)]
    grid_keys = _grid_keys(spec)
    random_keys = [k for k in sweep.space if k not in grid_keys]
    grid_points = list(itertools.product(*(sweep.space[k].args for k in grid_keys)))
    trials: list[Trial] = []
    sample = first_sample
    for point in grid_points:
        for _ in range(sweep.samples):
            rng = np.random.default_rng([spec.seed, sample])
            overrides = dict(zip(grid_keys, point))
            overrides.update({key: draw(sweep.space[key], rng) for key in random_keys})
            ordered = {key: overrides[key] for key in sweep.space}
            trials += [trial_of(spec, sample, k, ordered) for k in range(sweep.seeds)]
            sample += 1
    return trials


def trial_of(spec: JobSpec, sample: int, seed_offset: int, overrides: dict[str, Any]) -> Trial:
    """A sweep's trial: config `sample` (the spec's config with `overrides` set) on its seed
    number `seed_offset`; its id follows from both."""
    config = dict(spec.config)
    for key, value in overrides.items():
        config = set_dotted(config, key.removeprefix("config."), value)
    index = sample * spec.sweep.seeds + seed_offset
    return Trial(index, f"t{index:04d}", spec.seed + seed_offset, sample, dict(overrides), config)


def _grid_keys(spec: JobSpec) -> list[str]:
    """Dimensions enumerated rather than sampled: grid ones (and choice ones in a grid search)."""
    sweep = spec.sweep
    return [key for key, d in sweep.space.items()
            if d.kind == "grid" or (sweep.search == "grid" and d.kind == "choice")]


def grid_size(spec: JobSpec) -> int:
    """How many grid points each sample is run at (1 without grid dimensions)."""
    return math.prod(len(spec.sweep.space[key].args) for key in _grid_keys(spec))


def draw(distribution: Distribution, rng: np.random.Generator) -> Any:
    """One value from a search dimension."""
    kind, args = distribution.kind, distribution.args
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    if kind == "randint":
        return int(rng.integers(args[0], args[1]))  # high is exclusive, as in numpy and Tune
    return args[int(rng.integers(len(args)))]
