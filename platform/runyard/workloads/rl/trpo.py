"""rl.trpo — Trust Region Policy Optimization (Schulman et al. 2015), with GAE (Schulman et al. 2016).

One iteration:
  1. Sample `steps_per_iter` env steps with the current policy π_old.
  2. Advantages Â_t by GAE(γ, λ) (GAE eq. 16) from the value function V_φ; standardized.
  3. Maximize the surrogate L(θ) = E[π_θ(a|s)/π_old(a|s) · Â]  subject to
     KL̄(π_old ‖ π_θ) ≤ δ                                        (TRPO eq. 14)
     g = ∇L; the Fisher matrix F = ∇²KL̄ only ever enters as a product F·v (Pearlmutter's
     trick: the gradient of (∇KL̄)·v), damped as (F + c·I)·v; conjugate gradient solves
     F x = g in a few iterations                                  (TRPO appendix C)
     The largest step along x within the trust region is β = sqrt(2δ / xᵀFx); backtrack
     θ = θ_old + α^j β x until the measured KL ≤ δ and the surrogate improved (appendix C).
  4. Regress V_φ on the discounted returns-to-go (bootstrapped where a segment was cut).
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import Field

from runyard.workloads.lazy import lazy_module
from runyard.workloads.rl.common import (
    discounted_returns, flat_grad, flat_params, generalized_advantages, next_state_values,
    set_flat_params, standardize,
)
from runyard.workloads.rl.rollout import Batch
from runyard.workloads.rl.workload import EPISODE_METRICS, PROGRESS_METRICS, RLConfig, RLWorkload

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch
policies = lazy_module("runyard.workloads.rl.policies")  # the networks: torch


class TRPOConfig(RLConfig):
    steps_per_iter: int = Field(4000, ge=1, description="env steps per update, over all envs")
    lam: float = Field(0.97, ge=0, le=1, description="GAE λ")
    max_kl: float = Field(0.01, gt=0, description="trust region δ on the mean KL(π_old ‖ π_new)")
    cg_iters: int = Field(10, ge=1)
    cg_damping: float = Field(0.1, ge=0, description="c in (F + c·I)·v")
    backtrack_coef: float = Field(0.8, gt=0, lt=1, description="α: each backtrack scales the step by α")
    backtrack_iters: int = Field(10, ge=1)
    value_hidden: tuple[int, ...] = (64, 64)
    value_lr: float = Field(1e-3, gt=0)
    value_iters: int = Field(80, ge=1, description="full-batch Adam steps on the value loss per update")


def conjugate_gradient(
    matrix_vector: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """x ≈ A⁻¹ b for symmetric positive definite A, given only v ↦ A v (TRPO appendix C)."""
    x = torch.zeros_like(b)
    residual = b.clone()  # r = b − A x with x = 0
    direction = b.clone()
    residual_sq = residual @ residual
    for _ in range(iters):
        a_direction = matrix_vector(direction)
        alpha = residual_sq / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        new_residual_sq = residual @ residual
        if new_residual_sq < tol:
            break
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x


class TRPO(RLWorkload):
    Config = TRPOConfig
    metrics = EPISODE_METRICS | PROGRESS_METRICS | {"kl": "min", "surrogate_gain": "max", "line_search_steps": "min"}

    def setup_algorithm(self) -> None:
        c: TRPOConfig = self.config
        self.value = policies.ValueFunction(
            self.policy.obs_norm, self.observation_space.shape, c.value_hidden, c.policy.activation
        )
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=c.value_lr)

    def iterate(self) -> tuple[Batch, dict[str, float]]:
        batch = self.pool.sample(self.weights(), num_steps=self.config.steps_per_iter)
        own, learn_time = self.timed(self.update, batch)
        return batch, own | {"learn_time_s": learn_time}

    def update(self, batch: Batch) -> dict[str, float]:
        c: TRPOConfig = self.config
        obs = torch.as_tensor(batch["obs"])
        actions = torch.as_tensor(batch["actions"])

        # 2. GAE advantages and value targets.
        with torch.no_grad():
            values = self.value(obs).double().numpy()
            final_values = self.value(torch.as_tensor(batch["final_obs"])).double().numpy()
        next_values = next_state_values(values, final_values, batch["ends"], batch["terminated"])
        advantages = generalized_advantages(batch["rewards"], values, next_values, batch["ends"], c.gamma, c.lam)
        advantages = torch.as_tensor(standardize(advantages), dtype=torch.float32)
        returns = discounted_returns(batch["rewards"], batch["ends"], c.gamma, bootstrap=next_values)

        # 3. The trust-region step.
        with torch.no_grad():
            old_dist = self.policy.distribution(obs).detached()
            old_logp = old_dist.log_prob(actions)

        def surrogate() -> torch.Tensor:
            ratio = torch.exp(self.policy.distribution(obs).log_prob(actions) - old_logp)
            return (ratio * advantages).mean()

        def mean_kl() -> torch.Tensor:
            return old_dist.kl(self.policy.distribution(obs)).mean()

        def fisher_vector(v: torch.Tensor) -> torch.Tensor:
            kl_grad = flat_grad(mean_kl(), self.policy, create_graph=True)
            return flat_grad(kl_grad @ v, self.policy) + c.cg_damping * v

        surrogate_old = surrogate()
        g = flat_grad(surrogate_old, self.policy)
        x = conjugate_gradient(fisher_vector, g, c.cg_iters)
        step_size = torch.sqrt(2 * c.max_kl / (x @ fisher_vector(x)).clamp_min(1e-12))
        theta_old = flat_params(self.policy)

        accepted, kl, gain = None, 0.0, 0.0
        with torch.no_grad():
            for j in range(c.backtrack_iters):
                set_flat_params(self.policy, theta_old + c.backtrack_coef**j * step_size * x)
                kl = float(mean_kl())
                gain = float(surrogate() - surrogate_old)
                if kl <= c.max_kl and gain > 0:
                    accepted = j
                    break
            if accepted is None:  # no step both improves and stays in the region: keep θ_old
                set_flat_params(self.policy, theta_old)
                kl, gain = 0.0, 0.0
            entropy = float(self.policy.distribution(obs).entropy().mean())

        # 4. Value regression on the returns-to-go.
        target = torch.as_tensor(returns, dtype=torch.float32)
        for _ in range(c.value_iters):
            self.value_optimizer.zero_grad()
            (self.value(obs) - target).pow(2).mean().backward()
            self.value_optimizer.step()

        self.policy.obs_norm.update(batch["obs"])
        return {
            "kl": kl,
            "surrogate_gain": gain,
            "line_search_steps": float(c.backtrack_iters if accepted is None else accepted + 1),
            "entropy": entropy,
        }

    def algorithm_state(self) -> dict[str, Any]:
        return {"value": self.value.state_dict(), "value_optimizer": self.value_optimizer.state_dict()}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.value.load_state_dict(state["value"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
