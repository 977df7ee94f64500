"""What rl.pg, rl.trpo and rl.cem share: spec checks, env/policy/pool setup, episode metrics,
checkpoints and end-of-trial artifacts. Each algorithm file keeps only its own math.

The spec blocks an RL workload reads:
  env:     {id, kwargs: {}, max_episode_steps: null, preprocess: null | pong}
  rollout: {workers: W >= 1 | auto, envs_per_worker: K >= 1, cpus_per_worker, backend}
           (default 1 worker of 1 env; see layout.py for how they share the trial's CPUs)
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pydantic import Field

from runyard.workloads.base import Direction, Workload, WorkloadConfig, WorkloadContext
from runyard.workloads.blocks import EnvSpec, RolloutSpec
from runyard.workloads.lazy import lazy_module
from runyard.workloads.rl.layout import LayoutError, RolloutLayout, resolve_layout
from runyard.workloads.rl.policy_spec import PolicySpec, resolve_head
from runyard.workloads.rl.rollout import Batch, LocalRolloutPool, env_spaces, make_env
from runyard.workloads.rl.rollout_processes import ProcessRolloutPool

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch
policies = lazy_module("runyard.workloads.rl.policies")  # the networks: torch

EPISODE_METRICS: dict[str, Direction] = {
    "episode_return_mean": "max",
    "episode_return_min": "max",
    "episode_return_max": "max",
    "episode_len_mean": "max",
    "env_steps_total": "max",
    "env_steps_per_s": "max",
    "sample_time_s": "min",
    "learn_time_s": "min",
    "entropy": "max",
}


# Progress over the run rather than one batch: what a learning curve is drawn from.
PROGRESS_METRICS: dict[str, Direction] = {
    "episodes_total": "max",
    "episode_return_mean_100": "max",  # the mean return of the last 100 episodes
}


class RLConfig(WorkloadConfig):
    policy: PolicySpec = PolicySpec()
    gamma: float = Field(0.99, gt=0, le=1, description="discount factor γ")


def rollout_layout(context: WorkloadContext) -> RolloutLayout:
    """The trial's rollout block resolved against its CPUs (LayoutError if it cannot fit)."""
    return resolve_layout(context.rollout, context.resources.cpus_per_trial)


def check_env_id(env: EnvSpec | None) -> list[str]:
    """`env.id` is given and registered with gymnasium (ALE ids registered on demand)."""
    if env is None:
        return ["env.id: required for RL workloads, e.g. env: {id: CartPole-v1}"]
    env_id = env.id
    if env_id.startswith("ALE/"):
        from runyard.workloads.rl.atari import register_ale

        register_ale()
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        return [
            f"env.id: unknown gymnasium environment {env_id!r} ({err}). List the registered ids with "
            "`python -c 'import gymnasium, ale_py; gymnasium.register_envs(ale_py); gymnasium.pprint_registry()'`; "
            "Atari games are ALE/<Game>-v5; register your own env with gymnasium.register(id=..., entry_point=...)"
        ]
    return []


class RLWorkload(Workload):
    """Base of the runyard RL algorithms. Subclasses implement `setup_algorithm` and `iterate`."""

    Config: ClassVar[type[RLConfig]] = RLConfig
    metrics: ClassVar[dict[str, Direction]] = EPISODE_METRICS | PROGRESS_METRICS
    blocks = ("env", "rollout")

    # ---------------------------------------------------------------- checks before anything runs

    @classmethod
    def check_spec(cls, config: RLConfig, context: WorkloadContext) -> list[str]:
        problems = []
        try:
            rollout_layout(context)
        except LayoutError as err:
            problems.append(str(err))
        env_problems = check_env_id(context.env)
        if env_problems:
            return problems + env_problems
        env_id = context.env.id
        try:
            obs_space, action_space = env_spaces(context.env)
        except Exception as err:  # the env's own constructor rejected the kwargs
            return problems + [f"env: could not build {env_id!r}: {type(err).__name__}: {err}"]
        supported = "Discrete, Box (1-D, continuous)"
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
            isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
        ):
            problems.append(
                f"env.id: {cls.__name__} does not support {env_id}'s action space {action_space}; "
                f"it supports {supported} action spaces"
            )
            return problems
        if not isinstance(obs_space, gym.spaces.Box):
            problems.append(f"env.id: {cls.__name__} needs Box observations; {env_id} has {obs_space}")
            return problems
        if config.policy.torso == "conv" and len(obs_space.shape) not in (2, 3):
            problems.append(
                f"config.policy.torso: a conv torso needs image observations (H, W) or (C, H, W); "
                f"{env_id} has vector observations of shape {obs_space.shape}; use torso: mlp"
            )
        try:
            resolve_head(config.policy, action_space)
        except ValueError as err:
            problems.append(f"config.policy.head: {err} ({env_id})")
        return problems

    # ---------------------------------------------------------------- setup

    def setup(self, config: RLConfig, context: WorkloadContext) -> None:
        self.config, self.context = config, context
        # Small nets on a busy machine: intra-op threads beyond the trial's CPUs cost more in
        # contention than they save (10x on a shared 2-core box), so use exactly those CPUs:
        # learning runs while the rollout actors that share them are idle.
        torch.set_num_threads(max(1, int(context.resources.cpus_per_trial)))
        self.env_spec = context.env
        self.observation_space, self.action_space = env_spaces(self.env_spec)
        with torch.random.fork_rng():
            torch.manual_seed(context.seed)
            self.policy = policies.Policy(config.policy, self.observation_space, self.action_space)
            self.setup_algorithm()
        # Learner-side randomness (CEM's candidates, minibatch order) comes from these two.
        self.rng = np.random.default_rng(context.seed)
        self.torch_rng = torch.Generator().manual_seed(context.seed)
        pool_factory = context.parallel.get("rollout_pool")
        if context.rollout is not None and context.rollout.backend == "processes":
            pool_factory = ProcessRolloutPool
        elif pool_factory is None:  # no executor offers actors: the workers run in this process
            pool_factory = LocalRolloutPool
            rollout = (context.rollout or RolloutSpec()).model_copy(update={"backend": "local"})
            context = dataclasses.replace(context, rollout=rollout)
        layout = rollout_layout(context)
        self.pool = pool_factory(self.env_spec, config.policy, context.seed, layout.workers,
                                 layout.envs_per_worker, layout.threads_per_worker)
        self.iteration = 0
        self.env_steps_total = 0
        self.episodes_total = 0
        self.recent_returns: collections.deque[float] = collections.deque(maxlen=100)
        self.recent_lengths: collections.deque[int] = collections.deque(maxlen=100)
        self.history: list[dict[str, float]] = []

    def setup_algorithm(self) -> None:
        """Build the algorithm's own modules and optimizers (under the trial's torch seed)."""

    # ---------------------------------------------------------------- one iteration

    def iterate(self) -> tuple[Batch, dict[str, float]]:
        """Sample and learn once; return the batch whose episodes to report, and the
        algorithm's own metrics (learn_time_s, entropy, ...)."""
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        batch, own = self.iterate()
        stats = self.pool.last_stats
        self.env_steps_total += int(stats["env_steps"])
        self.iteration += 1
        metrics = {
            "env_steps_total": float(self.env_steps_total),
            "env_steps_per_s": float(stats["env_steps_per_s"]),
            "sample_time_s": float(stats["sample_time_s"]),
        }
        returns, lengths = batch["episode_returns"], batch["episode_lengths"]
        self.episodes_total += len(returns)
        self.recent_returns.extend(float(r) for r in returns)
        self.recent_lengths.extend(int(n) for n in lengths)
        metrics["episodes_total"] = float(self.episodes_total)
        if self.recent_returns:
            metrics["episode_return_mean_100"] = float(np.mean(self.recent_returns))
        if len(returns):  # a step-based batch may complete no episode; then none are reported
            metrics |= {
                "episode_return_mean": float(returns.mean()),
                "episode_return_min": float(returns.min()),
                "episode_return_max": float(returns.max()),
                "episode_len_mean": float(lengths.mean()),
            }
        metrics |= {k: float(v) for k, v in own.items()}
        self.history.append(metrics | {"iteration": float(self.iteration)})
        return metrics

    def timed(self, fn, *args, **kwargs):
        """(fn(*args, **kwargs), seconds it took)."""
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        return result, time.perf_counter() - start

    def weights(self) -> dict[str, np.ndarray]:
        return policies.weights_of(self.policy)

    def mean_entropy(self, obs: np.ndarray) -> float:
        with torch.no_grad():
            return float(self.policy.distribution(torch.as_tensor(obs)).entropy().mean())

    # ---------------------------------------------------------------- checkpoints

    def algorithm_state(self) -> dict[str, Any]:
        """The algorithm's own state (optimizers, search distribution ...)."""
        return {}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        pass

    def save(self, directory: Path) -> None:
        state = {
            "policy": self.policy.state_dict(),  # includes the observation normalizer
            "pool": self.pool.state_dict(),
            "rng": self.rng.bit_generator.state,
            "torch_rng": self.torch_rng.get_state(),
            "iteration": self.iteration,
            "env_steps_total": self.env_steps_total,
            "episodes_total": self.episodes_total,
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
            "history": self.history,
            "algorithm": self.algorithm_state(),
        }
        torch.save(state, Path(directory) / "rl_state.pt")

    def restore(self, directory: Path) -> None:
        state = torch.load(Path(directory) / "rl_state.pt", weights_only=False)
        self.policy.load_state_dict(state["policy"])
        self.pool.load_state_dict(state["pool"])
        self.rng.bit_generator.state = state["rng"]
        self.torch_rng.set_state(state["torch_rng"])
        self.iteration = state["iteration"]
        self.env_steps_total = state["env_steps_total"]
        self.episodes_total = state["episodes_total"]
        self.recent_returns.extend(state["recent_returns"])
        self.recent_lengths.extend(state["recent_lengths"])
        self.history = state["history"]
        self.load_algorithm_state(state["algorithm"])

    # ---------------------------------------------------------------- artifacts

    def artifacts(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from runyard.workloads.rl import visualize

        visualize.learning_curve(self.history, directory / "learning_curve.png", title=self.env_spec.id)
        if self.env_spec.preprocessing == "pong":
            visualize.first_layer_weights(self.policy, directory / "first_layer_weights.png")
            game = visualize.game_gif(lambda: make_env(self.env_spec), self.policy,
                                      directory / "game.gif", seed=self.context.seed)
            (directory / "game.txt").write_text(game.describe() + "\n")

    def close(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
