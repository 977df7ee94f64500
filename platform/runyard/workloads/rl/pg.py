"""rl.pg — REINFORCE (Williams 1992), as in "Deep Reinforcement Learning: Pong from Pixels".

One iteration: sample a batch of whole episodes with the current stochastic policy, then
take one gradient step on

    ∇J(θ) ≈ 1/N Σ_t ∇_θ log π_θ(a_t | s_t) · Â_t                 (Williams 1992, eq. 11)

where Â_t is the discounted return-to-go G_t = Σ_k γ^k r_{t+k}, standardized over the batch
(the seed's variance control), or, when a learned value baseline is on, GAE(γ, λ) standardized
(Schulman et al. 2016 eq. 16; λ = 1 is G_t − V(s_t), eq. 18). For Pong,
`reset_returns_at_reward` restarts G, and the advantage sum, at every point, as the seed does.
An optional entropy bonus β adds β·∇H(π(·|s_t)) to the gradient (Williams & Peng 1991; the
"β∇H" term of Mnih et al. 2016, sec. 4), which keeps the policy from turning deterministic
before it has found what pays.

With `reset_returns_at_reward` every point is a return of its own, so a batch need not be whole
episodes: it is `batch_episodes` episodes' worth of env steps (at the mean length of the last
100 episodes), and each env stops at the first point boundary after its share. No env waits
for another's long episode, and every sample is still from the current policy. The first
iteration, with no lengths seen yet, samples whole episodes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from runyard.workloads.lazy import lazy_module
from runyard.workloads.rl.common import discounted_returns, generalized_advantages, next_state_values, standardize
from runyard.workloads.rl.policy_spec import PolicySpec
from runyard.workloads.rl.rollout import Batch
from runyard.workloads.rl.workload import RLConfig, RLWorkload

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch
policies = lazy_module("runyard.workloads.rl.policies")  # the networks: torch


class PGConfig(RLConfig):
    policy: PolicySpec = PolicySpec(hidden=(32,))
    lr: float = Field(0.01, gt=0, description="policy learning rate")
    optimizer: Literal["adam", "rmsprop"] = "adam"
    rmsprop_decay: float = Field(0.99, gt=0, lt=1, description="RMSProp's running-average decay")
    batch_episodes: int = Field(16, ge=1, description="whole episodes per update")
    reset_returns_at_reward: bool = Field(False, description="Pong: restart the return at each point")
    baseline: bool = Field(False, description="subtract a learned V(s) before standardizing")
    lam: float = Field(1.0, ge=0, le=1, description="GAE λ with the baseline (1: G_t − V(s_t))")
    value_hidden: tuple[int, ...] = (64,)
    value_lr: float = Field(1e-2, gt=0)
    value_iters: int = Field(20, ge=1, description="full-batch Adam steps on the value loss per update")
    entropy_coef: float = Field(0.0, ge=0, description="β: weight of the policy's mean entropy in the objective")


class PolicyGradient(RLWorkload):
    Config = PGConfig

    def setup_algorithm(self) -> None:
        c: PGConfig = self.config
        if c.optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.lr)
        else:
            self.optimizer = torch.optim.RMSprop(self.policy.parameters(), lr=c.lr, alpha=c.rmsprop_decay)
        self.value = None
        if c.baseline:
            self.value = policies.ValueFunction(
                self.policy.obs_norm, self.observation_space.shape, c.value_hidden, c.policy.activation
            )
            self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=c.value_lr)

    def iterate(self) -> tuple[Batch, dict[str, float]]:
        c: PGConfig = self.config
        if c.reset_returns_at_reward and self.recent_lengths:
            steps = int(round(c.batch_episodes * sum(self.recent_lengths) / len(self.recent_lengths)))
            batch = self.pool.sample(self.weights(), num_steps=steps, until_point=True)
        else:
            batch = self.pool.sample(self.weights(), num_episodes=c.batch_episodes)
        own, learn_time = self.timed(self.update, batch)
        return batch, own | {"learn_time_s": learn_time}

    def update(self, batch: Batch) -> dict[str, float]:
        c: PGConfig = self.config
        # One float copy for the policy and every value iteration (each would convert the
        # int8 frames again: a third of a value step on Pong).
        obs = torch.as_tensor(batch["obs"]).float()
        actions = torch.as_tensor(batch["actions"])
        if self.value is None:
            returns = discounted_returns(batch["rewards"], batch["ends"], c.gamma, None, c.reset_returns_at_reward)
            advantages = standardize(returns)
        else:
            with torch.no_grad():
                values = self.value(obs).numpy()
                final_values = self.value(torch.as_tensor(batch["final_obs"])).numpy()
            returns, raw_advantages = baseline_targets(batch, values, final_values, c.gamma, c.lam,
                                                       c.reset_returns_at_reward)
            advantages = standardize(raw_advantages)

        dist = self.policy.distribution(obs)
        entropy = dist.entropy().mean()
        # −(1/N Σ log π(a_t|s_t) Â_t + β H): descending it ascends the objective of eq. 11 plus the bonus
        loss = -(dist.log_prob(actions) * torch.as_tensor(advantages, dtype=torch.float32)).mean()
        loss = loss - c.entropy_coef * entropy
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        metrics = {"entropy": float(entropy.detach())}

        if self.value is not None:
            target = torch.as_tensor(returns, dtype=torch.float32)
            for _ in range(c.value_iters):
                self.value_optimizer.zero_grad()
                value_loss = (self.value(obs) - target).pow(2).mean()
                value_loss.backward()
                self.value_optimizer.step()
        self.policy.obs_norm.update(batch["obs"])
        return metrics

    def algorithm_state(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.value is not None:
            state |= {"value": self.value.state_dict(), "value_optimizer": self.value_optimizer.state_dict()}
        return state

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        # An optimizer's state carries the learning rate it was saved with; this trial's
        # config says which one it trains with from here (a member of a population-based
        # sweep goes on from another's checkpoint with its own, perturbed rates).
        self.optimizer.load_state_dict(state["optimizer"])
        _set_lr(self.optimizer, self.config.lr)
        if self.value is not None:
            self.value.load_state_dict(state["value"])
            self.value_optimizer.load_state_dict(state["value_optimizer"])
            _set_lr(self.value_optimizer, self.config.value_lr)


def baseline_targets(batch: Batch, values, final_values, gamma: float, lam: float,
                     reset_at_point: bool) -> tuple:
    """(value targets G_t, advantages Â_t) with a learned baseline. Segments cut by a time
    limit or the batch's end continue in V(final obs) rather than in zero; with
    reset_at_point every point ends its own return and advantage sum."""
    next_values = next_state_values(values, final_values, batch["ends"], batch["terminated"])
    returns = discounted_returns(batch["rewards"], batch["ends"], gamma, next_values, reset_at_point)
    advantages = generalized_advantages(batch["rewards"], values, next_values, batch["ends"], gamma, lam,
                                        reset_at_point)
    return returns, advantages


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
