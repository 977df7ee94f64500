"""toy.quadratic — a workload whose answer is known, for exercising the platform itself.

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


class QuadraticConfig(WorkloadConfig):
    x: float = Field(0.0, description="the one hyperparameter; the best value is 0.3")
    decay: float = Field(0.5, gt=0, lt=1, description="how fast the score approaches its limit")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise added to each score")
    sleep_s: float = Field(0.0, ge=0, description="seconds each step sleeps (simulated work)")
    fail_at_iteration: int | None = Field(None, ge=1, description="raise at this iteration")
    fail_while_exists: str | None = Field(
        None, description="fail at fail_at_iteration only while this file exists (a transient "
                          "failure: remove the file and the trial can succeed)")


class Quadratic(Workload):
    Config = QuadraticConfig
    metrics = {"score": "max", "distance": "min"}

    def setup(self, config: QuadraticConfig, context: WorkloadContext) -> None:
        self.config = config
        self.rng = np.random.default_rng(context.seed)
        self.iteration = 0

    def step(self) -> dict[str, float]:
        if self.config.sleep_s:
            time.sleep(self.config.sleep_s)
        self.iteration += 1
        planted = self.config.fail_while_exists is None or Path(self.config.fail_while_exists).exists()
        if self.config.fail_at_iteration == self.iteration and planted:
            raise RuntimeError(f"toy.quadratic: planted failure at iteration {self.iteration}")
        limit = 1.0 - (self.config.x - BEST_X) ** 2
        score = (1.0 - self.config.decay**self.iteration) * limit
        score += self.config.noise * float(self.rng.standard_normal())
        return {"score": score, "distance": abs(self.config.x - BEST_X)}

    def save(self, directory: Path) -> None:
        state = {"iteration": self.iteration, "rng": self.rng.bit_generator.state}
        (Path(directory) / "toy.json").write_text(json.dumps(state))

    def restore(self, directory: Path) -> None:
        state = json.loads((Path(directory) / "toy.json").read_text())
        self.iteration = state["iteration"]
        self.rng.bit_generator.state = state["rng"]
