"""rl.cem — the cross-entropy method over policy parameters, with decaying extra noise
(Szita & Lőrincz 2006, "Learning Tetris Using the Noisy Cross-Entropy Method").

The search distribution is a diagonal Gaussian N(μ, diag σ²) over the flattened policy
parameters θ. One iteration (a generation):
  1. Draw a population θ_i = μ + σ ⊙ ε_i, ε_i ~ N(0, I).
  2. Score each candidate by its mean return over `episodes_per_candidate` episodes, acting
     greedily; the candidates are spread over the rollout pool and run in parallel. The
     current mean μ is scored alongside them: it is the policy this workload reports.
  3. Refit to the elite (the best ρ·n candidates):
       μ ← mean(θ_elite),   σ² ← var(θ_elite) + Z_t                  (Szita & Lőrincz eq. 4)
     where Z_t is extra noise decaying linearly to zero, which keeps σ from collapsing before
     the elite is good (the paper's Z_t = max(5 − t/10, 0) is one such schedule).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from runyard.workloads.lazy import lazy_module
from runyard.workloads.rl.common import flat_params, set_flat_params
from runyard.workloads.rl.policy_spec import PolicySpec
from runyard.workloads.rl.rollout import Batch
from runyard.workloads.rl.workload import EPISODE_METRICS, PROGRESS_METRICS, RLConfig, RLWorkload

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch
policies = lazy_module("runyard.workloads.rl.policies")  # the networks: torch


class CEMConfig(RLConfig):
    policy: PolicySpec = PolicySpec(hidden=())
    population: int = Field(32, ge=2, description="candidates per generation")
    elite_frac: float = Field(0.2, gt=0, le=1, description="ρ: the fraction of candidates kept")
    episodes_per_candidate: int = Field(2, ge=1)
    init_std: float = Field(1.0, gt=0, description="initial σ of every parameter")
    extra_noise: float = Field(0.25, ge=0, description="Z_0: variance added to σ² at generation 0")
    noise_decay_iters: int = Field(20, ge=1, description="Z_t falls linearly to 0 over this many generations")


class CrossEntropyMethod(RLWorkload):
    Config = CEMConfig
    metrics = EPISODE_METRICS | PROGRESS_METRICS | {"elite_return_mean": "max", "population_std": "min"}

    def setup_algorithm(self) -> None:
        self.mean = flat_params(self.policy).double().numpy()
        self.std = np.full_like(self.mean, self.config.init_std)
        # A scratch policy to turn a parameter vector into a weights dict for the workers.
        self._candidate = policies.Policy(self.config.policy, self.observation_space, self.action_space)

    def candidate_weights(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        self._candidate.load_state_dict(self.policy.state_dict())  # the normalizer's buffers
        set_flat_params(self._candidate, torch.as_tensor(theta, dtype=torch.float32))
        return policies.weights_of(self._candidate)

    def iterate(self) -> tuple[Batch, dict[str, float]]:
        c: CEMConfig = self.config
        # 1. The population, and the mean as the last candidate.
        population = self.mean + self.std * self.rng.standard_normal((c.population, self.mean.size))
        candidates = [self.candidate_weights(theta) for theta in population]
        candidates.append(self.candidate_weights(self.mean))
        # 2. Score every candidate in parallel across the pool.
        batches = self.pool.evaluate(candidates, c.episodes_per_candidate, greedy=True)
        scores = np.array([b["episode_returns"].mean() for b in batches[:-1]])
        mean_batch = batches[-1]
        # 3. Refit the Gaussian to the elite.
        elite_scores, learn_time = self.timed(self.refit, population, scores)
        set_flat_params(self.policy, torch.as_tensor(self.mean, dtype=torch.float32))
        self.policy.obs_norm.update(mean_batch["obs"])
        return mean_batch, {
            "elite_return_mean": float(elite_scores.mean()),
            "population_std": float(self.std.mean()),
            "entropy": self.mean_entropy(mean_batch["obs"]),
            "learn_time_s": learn_time,
        }

    def refit(self, population: np.ndarray, scores: np.ndarray) -> np.ndarray:
        c: CEMConfig = self.config
        n_elite = max(1, int(round(c.elite_frac * c.population)))
        elite = np.argsort(scores)[::-1][:n_elite]
        # Z_t decays linearly with the generation count t (= iterations done so far).
        extra = c.extra_noise * max(0.0, 1.0 - self.iteration / c.noise_decay_iters)
        self.mean = population[elite].mean(0)
        self.std = np.sqrt(population[elite].var(0) + extra)
        return scores[elite]

    def algorithm_state(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "std": self.std.copy()}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.mean, self.std = state["mean"].copy(), state["std"].copy()
