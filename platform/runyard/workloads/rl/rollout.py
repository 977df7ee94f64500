"""Rollouts: a RolloutWorker steps K envs with the current policy; a pool of workers splits
each batch between them.

Batch layout (plain numpy, what every algorithm consumes): N transitions, grouped by env so
each trajectory segment is contiguous and time-ordered.
  obs (N, *obs_shape)   actions (N, ...)   rewards (N,)   logp (N,)
  terminated (N,)       the episode ended in a terminal state (no bootstrapping)
  truncated (N,)        a time limit ended the episode
  ends (N,)             the last transition of a segment: terminated, truncated, or cut by
                        the end of the batch
  final_obs (S, *obs_shape)  the observation after each segment's last transition, one per end
  episode_returns (E,), episode_lengths (E,)   episodes completed in this batch (one begun
                        in an earlier batch counts whole)
  env_steps, sample_time_s   all env steps taken (also those of envs that had their share
                        while others finished theirs), and wall time

A worker's envs live across batches: a batch cut mid-episode continues it in the next one.
ALE ids on more than one emulator thread are stepped by ale-py's threaded vector env
(atari.AtariVectorEnvs), the rest one after another in the worker's thread (GymVectorEnvs);
the policy's forward pass covers all K envs at once. Randomness (env
seeds, action sampling) is one stream per worker, restarted by `reseed` from (job seed,
iteration, worker): when the pool starts, after a restore, and when a dead actor is replaced.
So the same seed gives the same batches from a fresh start, in process or on actors, and a
restore or a replacement continues deterministically (not along the uninterrupted run's path:
ale-py cannot save emulator states). CEM's evaluations reseed per task, so every candidate's
episodes start fresh.

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

from runyard.workloads.blocks import EnvSpec
from runyard.workloads.lazy import lazy_module
from runyard.workloads.rl.policy_spec import PolicySpec

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch
policies = lazy_module("runyard.workloads.rl.policies")  # the networks: torch

Batch = dict[str, Any]


def make_env(env_spec: EnvSpec) -> gym.Env:
    """One env of the spec's env block. Its preprocessing "pong" wraps the env in the
    Pong-from-pixels preprocessing (the default for ALE Pong ids). ALE ids are registered on
    demand."""
    if env_spec.id.startswith("ALE/"):
        from runyard.workloads.rl.atari import register_ale

        register_ale()
    env = gym.make(env_spec.id, **env_spec.make_kwargs)
    if env_spec.preprocessing == "pong":
        from runyard.workloads.rl.atari import PongFromPixels

        env = PongFromPixels(env)
    return env


def env_spaces(env_spec: EnvSpec) -> tuple[gym.Space, gym.Space]:
    """(observation_space, action_space) of the env a spec describes (builds and closes one)."""
    env = make_env(env_spec)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative shares, larger shares first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def worker_seed(job_seed: int, iteration: int, worker: int) -> int:
    """The seed a worker's streams restart from: a function of where, never of which process."""
    return int(np.random.SeedSequence([job_seed, iteration, worker]).generate_state(1)[0])


class GymVectorEnvs:
    """K copies of a gymnasium env, stepped one after another; an env that ends is reset in
    the same step. Only the envs asked to step do: one that has its share waits unchanged."""

    def __init__(self, env_spec: EnvSpec, num_envs: int):
        self.num_envs = num_envs
        self.envs = [make_env(env_spec) for _ in range(num_envs)]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self._obs: np.ndarray | None = None

    def reset(self, seeds: list[int]) -> np.ndarray:
        self._obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds)])
        return self._obs.copy()

    def step(self, actions: np.ndarray, active: np.ndarray):
        """(obs, rewards, terminated, truncated, final_obs, stepped): rows of envs that did not
        step keep their observation, with no reward; final_obs holds the last observation of
        each env that ended (None if none did)."""
        obs = self._obs.copy()
        rewards = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        final_obs = None
        for i in np.flatnonzero(active):
            obs[i], rewards[i], terminated[i], truncated[i], _ = self.envs[i].step(actions[i])
            if terminated[i] or truncated[i]:
                if final_obs is None:
                    final_obs = np.zeros_like(obs)
                final_obs[i] = obs[i]
                obs[i] = self.envs[i].reset()[0]
        self._obs = obs
        return obs.copy(), rewards, terminated, truncated, final_obs, active.copy()

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector_envs(env_spec: EnvSpec, num_envs: int, threads: int = 1):
    """K envs of the spec: ale-py's vector env for ALE ids it can reproduce when it has more
    than one emulator thread, else gymnasium's envs stepped here. On one thread the vector
    env only hands each step to its thread and back: 310 us of CPU per Pong step against
    263 stepping the gymnasium envs here (2026-12-07, 5 envs), and nothing to overlap."""
    if env_spec.id.startswith("ALE/") and threads > 1:
        from runyard.workloads.rl.atari import AtariVectorEnvs, vector_settings

        settings = vector_settings(env_spec)
        if settings is not None:
            return AtariVectorEnvs(settings, num_envs, threads, pong=env_spec.preprocessing == "pong")
    return GymVectorEnvs(env_spec, num_envs)


class RolloutWorker:
    """K envs that live across batches, a local copy of the policy, and this worker's own
    random streams (env seeds and action sampling)."""

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, envs_per_worker: int, seed: int,
                 threads: int = 1):
        self.num_envs = envs_per_worker
        self.envs = make_vector_envs(env_spec, envs_per_worker, threads)
        self.policy = policies.Policy(policy_spec, self.envs.single_observation_space,
                                      self.envs.single_action_space)
        self.policy.requires_grad_(False)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart every env (one seed each) and the action generator from `seed`."""
        K = self.num_envs
        seeds = np.random.SeedSequence(seed).generate_state(K + 1)
        self.generator = torch.Generator().manual_seed(int(seeds[K]))
        self.obs = self.envs.reset([int(s) for s in seeds[:K]])
        # Episodes in progress: their return and length so far (they may span batches).
        self.running_return = np.zeros(K)
        self.running_length = np.zeros(K, dtype=np.int64)

    def run(
        self,
        weights: dict[str, np.ndarray],
        num_steps: int | None = None,
        num_episodes: int | None = None,
        until_point: bool = False,
        greedy: bool = False,
        seed: int | None = None,
    ) -> Batch:
        """Collect `num_steps` steps (split over the K envs) or `num_episodes` whole episodes.

        until_point: after its share of steps, each env goes on to the end of the point it is
            playing (its next nonzero reward, or the episode's end), so that a return restarted
            at every point (Pong) is never cut: the batch is as long as needed, not longer.
        seed: reseed first (CEM scores each candidate on episodes of its own).
        """
        if (num_steps is None) == (num_episodes is None):
            raise ValueError("give exactly one of num_steps and num_episodes")
        # The forward pass is small and batched over the K envs; the emulator threads want the
        # cores. More torch threads than one only contend with them (measured 4x slower on 2
        # cores), so sampling runs on one, and learning gets the trial's threads back after.
        learner_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(weights, num_steps, num_episodes, until_point, greedy, seed)
        finally:
            torch.set_num_threads(learner_threads)

    def _run(self, weights, num_steps, num_episodes, until_point, greedy, seed) -> Batch:
        start = time.perf_counter()
        if seed is not None:
            self.reseed(seed)
        policies.load_weights(self.policy, weights)
        actor = policies.Actor(self.policy)
        K = self.num_envs
        if num_steps is not None:
            steps_left = np.array(split(num_steps, K))
            episodes_left = np.full(K, np.inf)
        else:
            steps_left = np.full(K, np.inf)
            episodes_left = np.array(split(num_episodes, K), dtype=float)
        active = (steps_left > 0) & (episodes_left > 0)
        # One row per step for all K envs; `active` says which envs each row belongs to.
        steps: dict[str, list[np.ndarray]] = {k: [] for k in STEP_KEYS + ("active",)}
        final_rows: list[tuple[int, int, np.ndarray]] = []  # (env, step, obs) per segment end
        returns, lengths = [], []
        obs, t, env_steps = self.obs, 0, 0

        while active.any():
            actions, logp = actor.act(obs, self.generator, greedy)
            next_obs, rewards, terminated, truncated, final_obs, stepped = self.envs.step(actions, active)
            done = terminated | truncated
            steps_left -= active
            share_met = steps_left <= 0
            if until_point:
                share_met &= (rewards != 0) | done
            cut = active & ~done & share_met
            for name, value in (("obs", obs), ("actions", actions), ("rewards", rewards),
                                ("logp", logp), ("terminated", terminated),
                                ("truncated", truncated), ("ends", done | cut), ("active", active.copy())):
                steps[name].append(value)
            env_steps += int(stepped.sum())
            # Episode bookkeeping follows every env that stepped: the vector ALE steps all of
            # them, also those that have their share, and their episodes go on (unrecorded).
            self.running_return += np.where(stepped, rewards, 0.0)
            self.running_length += stepped
            for i in np.flatnonzero(stepped & done):
                if active[i]:
                    final_rows.append((i, t, final_obs[i]))
                    episodes_left[i] -= 1
                returns.append(self.running_return[i])
                lengths.append(self.running_length[i])
                self.running_return[i], self.running_length[i] = 0.0, 0
            for i in np.flatnonzero(cut):
                final_rows.append((i, t, next_obs[i]))
            active &= ~share_met & (episodes_left > 0)
            obs, t = next_obs, t + 1
        self.obs = obs

        batch = self._assemble(steps, final_rows)
        batch["episode_returns"] = np.array(returns, dtype=np.float64)
        batch["episode_lengths"] = np.array(lengths, dtype=np.int64)
        batch["env_steps"] = env_steps
        batch["sample_time_s"] = time.perf_counter() - start
        return batch

    def _assemble(self, steps: dict[str, list[np.ndarray]], final_rows) -> Batch:
        """Per-step rows (time, env) regrouped env by env, each env's rows in time order."""
        space = self.envs.single_observation_space
        if not steps["active"]:
            empty = {k: np.zeros((0,)) for k in STEP_KEYS}
            empty["obs"] = empty["final_obs"] = np.zeros((0, *space.shape), space.dtype)
            return empty
        mask = np.stack(steps["active"]).T  # (K, T)
        batch: Batch = {}
        for name in STEP_KEYS:
            rows = np.stack(steps[name])  # (T, K, ...)
            batch[name] = np.swapaxes(rows, 0, 1)[mask]
        final_rows.sort(key=lambda row: (row[0], row[1]))
        batch["final_obs"] = np.array([row[2] for row in final_rows], dtype=space.dtype).reshape(-1, *space.shape)
        batch["obs"] = batch["obs"].astype(space.dtype, copy=False)
        batch["rewards"] = batch["rewards"].astype(np.float32)
        batch["logp"] = batch["logp"].astype(np.float32)
        return batch

    def close(self) -> None:
        self.envs.close()


STEP_KEYS = ("obs", "actions", "rewards", "logp", "terminated", "truncated", "ends")


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
    num_steps: int | None = None
    num_episodes: int | None = None
    until_point: bool = False
    greedy: bool = False
    seed: int | None = None  # reseed the worker first (CEM's evaluations)


def run_task(worker: RolloutWorker, task: Task, weights: dict[str, np.ndarray]) -> Batch:
    return worker.run(weights, task.num_steps, task.num_episodes, task.until_point, task.greedy, task.seed)


class RolloutPool(abc.ABC):
    """W rollout workers of K envs each. Subclasses say how tasks run (`run_tasks`) and how
    workers restart their random streams (`reseed_workers`).

    Constructor: (env_spec, policy_spec, seed, workers, envs_per_worker, threads_per_worker)
    — the signature of the factory an executor places in context.parallel["rollout_pool"].
    """

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, seed: int, workers: int,
                 envs_per_worker: int, threads_per_worker: int = 1):
        if workers < 1 or envs_per_worker < 1:
            raise ValueError(f"rollout needs workers >= 1 and envs_per_worker >= 1, got {workers}, {envs_per_worker}")
        self.env_spec, self.policy_spec = env_spec, policy_spec
        self.seed, self.workers, self.envs_per_worker = seed, workers, envs_per_worker
        self.threads_per_worker = threads_per_worker
        self.calls = 0  # sample/evaluate calls so far: the "iteration" seeds derive from
        self.last_stats: dict[str, float] = {}

    @abc.abstractmethod
    def run_tasks(self, tasks: list[Task]) -> list[Batch]:
        """Run tasks (task i on worker i mod W, in order per worker); results in task order."""

    @abc.abstractmethod
    def reseed_workers(self) -> None:
        """Restart worker w's envs and action stream from worker_seed(seed, calls, w)."""

    def put_weights(self, weights: dict[str, np.ndarray]) -> Any:
        """Make weights available to the workers once per call (Ray: the object store)."""
        return weights

    def _timed(self, tasks: list[Task]) -> list[Batch]:
        self.calls += 1
        start = time.perf_counter()
        batches = self.run_tasks(tasks)
        elapsed = time.perf_counter() - start
        steps = sum(b["env_steps"] for b in batches)
        self.last_stats = {"env_steps": steps, "sample_time_s": elapsed, "env_steps_per_s": steps / elapsed}
        return batches

    def sample(self, weights, *, num_steps: int | None = None, num_episodes: int | None = None,
               until_point: bool = False, greedy: bool = False) -> Batch:
        """One batch of `num_steps` steps or `num_episodes` episodes, split over the workers;
        with until_point every env also finishes the point it is playing (see RolloutWorker.run)."""
        total = num_steps if num_steps is not None else num_episodes
        handle = self.put_weights(weights)
        tasks = [
            Task(handle, num_steps=share if num_steps is not None else None,
                 num_episodes=share if num_episodes is not None else None,
                 until_point=until_point, greedy=greedy)
            for share in split(total, self.workers) if share > 0
        ]
        return concatenate(self._timed(tasks))

    def evaluate(self, candidates: list[dict], episodes: int, greedy: bool = True) -> list[Batch]:
        """`episodes` fresh episodes of each candidate's weights; candidates spread over the
        workers, each task reseeded from (job seed, call, task) so where it runs does not matter."""
        seeds = [int(np.random.SeedSequence([self.seed, self.calls + 1, i, 1]).generate_state(1)[0])
                 for i in range(len(candidates))]
        tasks = [Task(self.put_weights(w), num_episodes=episodes, greedy=greedy, seed=s)
                 for w, s in zip(candidates, seeds)]
        return self._timed(tasks)

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after a checkpoint: the call count, and every worker reseeded from it."""
        self.calls = int(state["calls"])
        self.reseed_workers()

    def close(self) -> None:
        """Release workers. Default: nothing."""


class LocalRolloutPool(RolloutPool):
    """W workers in this process, run one after another (no Ray needed)."""

    def __init__(self, env_spec: EnvSpec, policy_spec: PolicySpec, seed: int, workers: int,
                 envs_per_worker: int, threads_per_worker: int = 1):
        super().__init__(env_spec, policy_spec, seed, workers, envs_per_worker, threads_per_worker)
        self._workers = [
            RolloutWorker(env_spec, policy_spec, envs_per_worker, worker_seed(seed, 0, w), threads_per_worker)
            for w in range(workers)
        ]

    def run_tasks(self, tasks: list[Task]) -> list[Batch]:
        return [run_task(self._workers[i % self.workers], t, t.weights) for i, t in enumerate(tasks)]

    def reseed_workers(self) -> None:
        for w, worker in enumerate(self._workers):
            worker.reseed(worker_seed(self.seed, self.calls, w))

    def close(self) -> None:
        for worker in self._workers:
            worker.close()
