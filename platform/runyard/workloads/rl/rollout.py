"""Rollouts: a RolloutWorker steps a gymnasium vector env with the current policy; a pool of
workers splits each batch between them.

Batch layout (plain numpy, what every algorithm consumes): N transitions, grouped by env so
each trajectory segment is contiguous and time-ordered.
  obs (N, *obs_shape)   actions (N, ...)   rewards (N,)   logp (N,)
  terminated (N,)       the episode ended in a terminal state (no bootstrapping)
  truncated (N,)        a time limit ended the episode
  ends (N,)             the last transition of a segment: terminated, truncated, or cut by
                        the end of the batch
  final_obs (S, *obs_shape)  the observation after each segment's last transition, one per end
  episode_returns (E,), episode_lengths (E,)   completed episodes only
  env_steps, sample_time_s   all env steps taken (also those discarded), and wall time

Every task carries its own seed: the worker reseeds its envs (one seed per env) and its
action-sampling generator from it. A worker therefore holds no state between tasks, so the
same job seed gives the same batches in-process, on Ray actors, after a restore, and after
a dead actor was replaced.

The pool interface (sample, evaluate, state_dict, load_state_dict, last_stats, close) is
backend-agnostic: the executor may hand a Ray-backed pool built with the same constructor
arguments through context.parallel["rollout_pool"].
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from runyard.workloads.rl.policies import Policy, PolicySpec, load_weights

Batch = dict[str, Any]


def make_env(env_spec: dict[str, Any]) -> gym.Env:
    """One env from the spec's env block: {id, kwargs, max_episode_steps, preprocess}.

    preprocess: "pong" wraps the env in the Pong-from-pixels preprocessing; it is the
    default for ALE Pong ids. ALE ids are registered on demand.
    """
    env_id = env_spec["id"]
    if env_id.startswith("ALE/"):
        from runyard.workloads.rl.atari import register_ale

        register_ale()
    kwargs = dict(env_spec.get("kwargs") or {})
    if env_spec.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = int(env_spec["max_episode_steps"])
    env = gym.make(env_id, **kwargs)
    if preprocessing(env_spec) == "pong":
        from runyard.workloads.rl.atari import PongFromPixels

        env = PongFromPixels(env)
    return env


def preprocessing(env_spec: dict[str, Any]) -> str | None:
    default = "pong" if "Pong" in env_spec["id"] and env_spec["id"].startswith("ALE/") else None
    return env_spec.get("preprocess", default)


def env_spaces(env_spec: dict[str, Any]) -> tuple[gym.Space, gym.Space]:
    """(observation_space, action_space) of the env a spec describes (builds and closes one)."""
    env = make_env(env_spec)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative shares, larger shares first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


class RolloutWorker:
    """K copies of an env in a gymnasium SyncVectorEnv, and a local copy of the policy."""

    def __init__(self, env_spec: dict, policy_spec: dict, envs_per_worker: int):
        self.num_envs = envs_per_worker
        self.envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(env_spec) for _ in range(envs_per_worker)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.policy = Policy(
            PolicySpec(**policy_spec), self.envs.single_observation_space, self.envs.single_action_space
        )
        self.policy.requires_grad_(False)

    def run(
        self,
        weights: dict[str, np.ndarray],
        seed: int,
        num_steps: int | None = None,
        num_episodes: int | None = None,
        greedy: bool = False,
    ) -> Batch:
        """Collect `num_steps` steps (split over the K envs) or `num_episodes` whole episodes."""
        if (num_steps is None) == (num_episodes is None):
            raise ValueError("give exactly one of num_steps and num_episodes")
        start = time.perf_counter()
        load_weights(self.policy, weights)
        K = self.num_envs
        # One seed per env and one for action sampling, all derived from the task seed.
        seeds = np.random.SeedSequence(seed).generate_state(K + 1)
        generator = torch.Generator().manual_seed(int(seeds[K]))
        obs, _ = self.envs.reset(seed=[int(s) for s in seeds[:K]])

        if num_steps is not None:
            steps_left = np.array(split(num_steps, K))
            episodes_left = np.full(K, np.inf)
        else:
            steps_left = np.full(K, np.inf)
            episodes_left = np.array(split(num_episodes, K), dtype=float)
        active = (steps_left > 0) & (episodes_left > 0)
        keys = ("obs", "actions", "rewards", "logp", "terminated", "truncated", "ends")
        per_env = [{k: [] for k in keys} | {"final_obs": []} for _ in range(K)]
        running_return, running_length = np.zeros(K), np.zeros(K, dtype=np.int64)
        returns, lengths = [], []
        env_steps = 0

        while active.any():
            with torch.no_grad():
                dist = self.policy.distribution(torch.as_tensor(obs))
                actions = dist.mode() if greedy else dist.sample(generator)
                logp = dist.log_prob(actions)
            actions_np = actions.numpy()
            next_obs, rewards, terminated, truncated, infos = self.envs.step(actions_np)
            env_steps += K
            for i in np.flatnonzero(active):
                done = bool(terminated[i] or truncated[i])
                steps_left[i] -= 1
                cut = not done and steps_left[i] == 0
                record = per_env[i]
                record["obs"].append(obs[i])
                record["actions"].append(actions_np[i])
                record["rewards"].append(rewards[i])
                record["logp"].append(float(logp[i]))
                record["terminated"].append(bool(terminated[i]))
                record["truncated"].append(bool(truncated[i]))
                record["ends"].append(done or cut)
                running_return[i] += rewards[i]
                running_length[i] += 1
                if done:
                    record["final_obs"].append(infos["final_obs"][i])
                    returns.append(running_return[i])
                    lengths.append(running_length[i])
                    running_return[i], running_length[i] = 0.0, 0
                    episodes_left[i] -= 1
                elif cut:
                    record["final_obs"].append(next_obs[i])
                active[i] = steps_left[i] > 0 and episodes_left[i] > 0
            obs = next_obs

        space = self.envs.single_observation_space
        batch: Batch = {}
        for k in keys + ("final_obs",):
            rows = [row for record in per_env for row in record[k]]
            if k in ("obs", "final_obs"):
                batch[k] = np.array(rows, dtype=space.dtype).reshape(-1, *space.shape)
            else:
                batch[k] = np.array(rows)
        batch["rewards"] = batch["rewards"].astype(np.float32)
        batch["logp"] = batch["logp"].astype(np.float32)
        batch["episode_returns"] = np.array(returns, dtype=np.float64)
        batch["episode_lengths"] = np.array(lengths, dtype=np.int64)
        batch["env_steps"] = env_steps
        batch["sample_time_s"] = time.perf_counter() - start
        return batch

    def close(self) -> None:
        self.envs.close()


def concatenate(batches: list[Batch]) -> Batch:
    """One batch from several (worker order kept); env_steps add up, sample time is the max."""
    merged: Batch = {}
    for key, value in batches[0].items():
        if isinstance(value, np.ndarray):
            merged[key] = np.concatenate([b[key] for b in batches])
    merged["env_steps"] = sum(b["env_steps"] for b in batches)
    merged["sample_time_s"] = max(b["sample_time_s"] for b in batches)
    return merged


@dataclass(frozen=True)
class Task:
    """One unit of work for one worker."""

    weights: Any  # a weights dict, or a backend's handle to one (a Ray ObjectRef)
    seed: int
    num_steps: int | None = None
    num_episodes: int | None = None
    greedy: bool = False


class RolloutPool(abc.ABC):
    """W rollout workers of K envs each. Subclasses only say how tasks run (`run_tasks`).

    Constructor: (env_spec, policy_spec, seed, workers, envs_per_worker) — the signature of
    the factory an executor places in context.parallel["rollout_pool"].
    """

    def __init__(self, env_spec: dict, policy_spec: dict, seed: int, workers: int, envs_per_worker: int):
        if workers < 1 or envs_per_worker < 1:
            raise ValueError(f"rollout needs workers >= 1 and envs_per_worker >= 1, got {workers}, {envs_per_worker}")
        self.env_spec, self.policy_spec = dict(env_spec), dict(policy_spec)
        self.seed, self.workers, self.envs_per_worker = seed, workers, envs_per_worker
        self.calls = 0
        self.last_stats: dict[str, float] = {}

    @abc.abstractmethod
    def run_tasks(self, tasks: list[Task]) -> list[Batch]:
        """Run tasks (task i on worker i mod W, in order per worker); results in task order."""

    def put_weights(self, weights: dict[str, np.ndarray]) -> Any:
        """Make weights available to the workers once per call (Ray: the object store)."""
        return weights

    def _task_seeds(self, n: int) -> list[int]:
        # seed_i = f(job seed, call number, task number): reproducible, and independent of
        # which process runs the task.
        self.calls += 1
        return [int(np.random.SeedSequence([self.seed, self.calls, i]).generate_state(1)[0]) for i in range(n)]

    def _timed(self, tasks: list[Task]) -> list[Batch]:
        start = time.perf_counter()
        batches = self.run_tasks(tasks)
        elapsed = time.perf_counter() - start
        steps = sum(b["env_steps"] for b in batches)
        self.last_stats = {"env_steps": steps, "sample_time_s": elapsed, "env_steps_per_s": steps / elapsed}
        return batches

    def sample(self, weights, *, num_steps: int | None = None, num_episodes: int | None = None,
               greedy: bool = False) -> Batch:
        """One batch of `num_steps` steps or `num_episodes` episodes, split over the workers."""
        total = num_steps if num_steps is not None else num_episodes
        shares = [s for s in split(total, self.workers) if s > 0]
        seeds = self._task_seeds(len(shares))
        handle = self.put_weights(weights)
        tasks = [
            Task(handle, seed, num_steps=share if num_steps is not None else None,
                 num_episodes=share if num_episodes is not None else None, greedy=greedy)
            for share, seed in zip(shares, seeds)
        ]
        return concatenate(self._timed(tasks))

    def evaluate(self, candidates: list[dict], episodes: int, greedy: bool = True) -> list[Batch]:
        """`episodes` episodes of each candidate's weights; candidates spread over the workers."""
        seeds = self._task_seeds(len(candidates))
        tasks = [Task(self.put_weights(w), s, num_episodes=episodes, greedy=greedy) for w, s in zip(candidates, seeds)]
        return self._timed(tasks)

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def close(self) -> None:
        """Release workers. Default: nothing."""


class LocalRolloutPool(RolloutPool):
    """W workers in this process, run one after another (no Ray needed)."""

    def __init__(self, env_spec: dict, policy_spec: dict, seed: int, workers: int, envs_per_worker: int):
        super().__init__(env_spec, policy_spec, seed, workers, envs_per_worker)
        self._workers = [RolloutWorker(env_spec, policy_spec, envs_per_worker) for _ in range(workers)]

    def run_tasks(self, tasks: list[Task]) -> list[Batch]:
        return [
            self._workers[i % self.workers].run(t.weights, t.seed, t.num_steps, t.num_episodes, t.greedy)
            for i, t in enumerate(tasks)
        ]

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
