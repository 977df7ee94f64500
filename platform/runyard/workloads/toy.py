"""Workloads whose answer is known, for exercising the platform itself: toy.quadratic (below)
and toy.bowl (at the end, for judging searchers).

toy.quadratic:

score_t = (1 - decay^t) * (1 - (x - 0.3)^2) + noise * N(0, 1)

Its best x is 0.3, every config improves with iterations at the same rate, so the ranking
of trials is known in advance (schedulers that stop poor trials early can be checked), and
it can sleep per step (overhead benchmarks) or fail at a chosen iteration (failure paths).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext

BEST_X = 0.3


class ToyConfig(WorkloadConfig):
    decay: float = Field(0.5, gt=0, lt=1, description="how fast the score approaches its limit")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise added to each score")
    sleep_s: float = Field(0.0, ge=0, description="seconds each step sleeps (simulated work)")


class QuadraticConfig(ToyConfig):
    x: float = Field(0.0, description="the one hyperparameter; the best value is 0.3")
    fail_at_iteration: int | None = Field(None, ge=1, description="raise at this iteration")
    fail_while_exists: str | None = Field(
        None, description="fail at fail_at_iteration only while this file exists (a transient "
                          "failure: remove the file and the trial can succeed)")


class _Toy(Workload):
    """score_t = (1 - decay^t) * limit + noise * N(0, 1), where each toy says its limit (and
    what else it reports); the noise is drawn from the trial's seed."""

    config: ToyConfig

    def setup(self, config: ToyConfig, context: WorkloadContext) -> None:
        self.config = config
        self.rng = np.random.default_rng(context.seed)
        self.iteration = 0

    def limit(self) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        if self.config.sleep_s:
            time.sleep(self.config.sleep_s)
        self.iteration += 1
        limit, reported = self.limit()
        score = (1.0 - self.config.decay**self.iteration) * limit
        score += self.config.noise * float(self.rng.standard_normal())
        return {"score": score, **reported}

    def save(self, directory: Path) -> None:
        state = {"iteration": self.iteration, "rng": self.rng.bit_generator.state}
        (Path(directory) / "toy.json").write_text(json.dumps(state))

    def restore(self, directory: Path) -> None:
        state = json.loads((Path(directory) / "toy.json").read_text())
        self.iteration = state["iteration"]
        self.rng.bit_generator.state = state["rng"]


class Quadratic(_Toy):
    Config = QuadraticConfig
    metrics = {"score": "max", "distance": "min"}

    def limit(self) -> tuple[float, dict[str, float]]:
        planted = self.config.fail_while_exists is None or Path(self.config.fail_while_exists).exists()
        if self.config.fail_at_iteration == self.iteration and planted:
            raise RuntimeError(f"toy.quadratic: planted failure at iteration {self.iteration}")
        return 1.0 - (self.config.x - BEST_X) ** 2, {"distance": abs(self.config.x - BEST_X)}


# toy.bowl — four hyperparameters of a made-up trainer, with a known optimum, for judging searchers.
#
# Each dimension is mapped onto [0, 1] over the range a sweep would search (learning rate and
# width on a log scale); d is the Euclidean distance from the optimum in those coordinates:
#
#   score_t = (1 - decay^t) * exp(-(d / BOWL_WIDTH)^2) + noise * N(0, 1)
#
# so the best score is 1, and a config is within 1% of it when d <= 0.1 * BOWL_WIDTH = 0.18:
# a ball that random search hits about once in 250 draws over the whole box.
BOWL_RANGES = {"lr": (1e-5, 1e-1, "log"), "momentum": (0.0, 1.0, "linear"),
               "width": (16, 1024, "log"), "dropout": (0.0, 0.5, "linear")}
BOWL_OPTIMUM = {"lr": 3e-3, "momentum": 0.9, "width": 128, "dropout": 0.1}
BOWL_WIDTH = 1.8


def bowl_distance(values: dict[str, float]) -> float:
    """d: how far a config is from the optimum, in the unit box over BOWL_RANGES."""
    def unit(name: str, value: float) -> float:
        low, high, scale = BOWL_RANGES[name]
        if scale == "log":
            return (np.log(value) - np.log(low)) / (np.log(high) - np.log(low))
        return (value - low) / (high - low)

    return float(np.sqrt(sum((unit(n, values[n]) - unit(n, BOWL_OPTIMUM[n])) ** 2 for n in BOWL_RANGES)))


def bowl_score(values: dict[str, float]) -> float:
    """The noise-free limit of the score: 1 at the optimum."""
    return float(np.exp(-(bowl_distance(values) / BOWL_WIDTH) ** 2))


class BowlConfig(ToyConfig):
    lr: float = Field(1e-2, gt=0, description="best at 3e-3 (searched on a log scale)")
    momentum: float = Field(0.5, ge=0, le=1, description="best at 0.9")
    width: int = Field(32, ge=1, description="best at 128 (searched on a log scale)")
    dropout: float = Field(0.3, ge=0, le=1, description="best at 0.1")


class Bowl(_Toy):
    Config = BowlConfig
    metrics = {"score": "max", "regret": "min"}

    def limit(self) -> tuple[float, dict[str, float]]:
        best = bowl_score(self.config.model_dump())
        return best, {"regret": 1.0 - best}
