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
from collections import Counter
from dataclasses import dataclass, field, replace
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
    # Significant digits of a float dimension's value in the label where 3 would make two
    # samples of the same expansion look alike (see `distinct_labels`).
    digits: dict[str, int] = field(default_factory=dict)
    twin: bool = False  # its values equal another sample's: the label names its sample too

    @property
    def label(self) -> str:
        """A run name that says what distinguishes this trial."""
        parts = _values_text(self.overrides, self.digits)
        if self.twin:
            parts.append(f"sample={self.sample}")
        return ",".join(parts + [f"seed={self.seed}"])


def _values_text(overrides: dict[str, Any], digits: dict[str, int]) -> list[str]:
    return [f"{key.removeprefix('config.')}={_format(value, digits.get(key, 3))}"
            for key, value in overrides.items()]


def _format(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value).replace(" ", "")


def distinct_labels(trials: list[Trial]) -> list[Trial]:
    """The trials again, labelled so that no two samples share a run name: a float value gets
    the fewest significant digits (3 or more) that tell it from the nearest other values of
    its dimension, and samples whose labels would still be equal name their sample number."""
    by_sample = {trial.sample: trial.overrides for trial in trials}
    digits: dict[int, dict[str, int]] = {sample: {} for sample in by_sample}
    for key in {key for overrides in by_sample.values() for key in overrides}:
        values = sorted({o[key] for o in by_sample.values() if isinstance(o.get(key), float)})
        needed = {value: _digits_apart(value, values[i - 1: i] + values[i + 1: i + 2])
                  for i, value in enumerate(values)}
        for sample, overrides in by_sample.items():
            if isinstance(overrides.get(key), float):
                digits[sample][key] = needed[overrides[key]]
    labelled = {sample: ",".join(_values_text(overrides, digits[sample]))
                for sample, overrides in by_sample.items()}
    shared = {name for name, count in Counter(labelled.values()).items() if count > 1}
    return [replace(trial, digits=digits[trial.sample], twin=labelled[trial.sample] in shared)
            for trial in trials]


def _digits_apart(value: float, neighbours: list[float]) -> int:
    return next((n for n in range(3, 18)
                 if all(f"{value:.{n}g}" != f"{other:.{n}g}" for other in neighbours)), 17)


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
    return distinct_labels(trials)


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
