"""Pong sampler throughput: runyard's samplers side by side with the raw emulator baselines.

Every row steps ALE/Pong-v5's dynamics (frameskip 4, sticky actions 0.25) and includes the
Pong-from-pixels preprocessing and the 200-unit policy's forward pass and action sampling:

  bare gymnasium x2    two processes, each stepping one gymnasium ALE/Pong-v5 env in a plain
                       Python loop (preprocess, forward, step), their rates added
  ale-py vector        one process, ale-py's AtariVectorEnv (Pong-v5 settings, 2 threads),
                       batched preprocessing and one forward pass for all K envs
  runyard local        LocalRolloutPool: 1 worker of K envs on 2 emulator threads, in process
  runyard ray          RayRolloutPool: 2 actors of K/2 envs, 1 thread each (what
                       jobs/pong_pg.yaml gets on 2 CPUs: workers: auto)

runyard's rows also record the trajectories and assemble the batch (and ship it through the
object store, for Ray). Rounds alternate between the rows; the table gives medians and the
ratio to the best raw baseline (target >= 0.8).

    PYTHONPATH=platform python benchmarks/rollout_throughput.py [--steps 8000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import ray
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe  # noqa: E402

from runyard.execute.rollout_pool import RayRolloutPool  # noqa: E402
from runyard.workloads.blocks import EnvSpec  # noqa: E402
from runyard.workloads.rl.atari import AtariVectorEnvs, preprocess_frame, register_ale, vector_settings  # noqa: E402
from runyard.workloads.rl.policies import Policy, PolicySpec  # noqa: E402
from runyard.workloads.rl.rollout import LocalRolloutPool  # noqa: E402

ENV = EnvSpec(id="ALE/Pong-v5", preprocess="pong")
SPEC = PolicySpec(hidden=(200,), activation="relu", head="bernoulli")
OBS_SPACE, ACTION_SPACE = gym.spaces.Box(-1, 1, (80, 80), np.int8), gym.spaces.Discrete(2)


def make_policy() -> Policy:
    torch.manual_seed(0)
    policy = Policy(SPEC, OBS_SPACE, ACTION_SPACE)
    policy.requires_grad_(False)
    return policy


def bare_gymnasium_loop(steps: int, seed: int, start_barrier, results) -> None:
    """One process: a gymnasium Pong-v5 env, preprocessing and a forward pass per step."""
    torch.set_num_threads(1)
    register_ale()
    policy = make_policy()
    env = gym.make("ALE/Pong-v5")
    generator = torch.Generator().manual_seed(seed)
    frame, _ = env.reset(seed=seed)
    previous = np.zeros((80, 80), np.int8)
    start_barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        current = preprocess_frame(frame)
        obs, previous = current - previous, current
        with torch.no_grad():
            up = int(policy.distribution(torch.as_tensor(obs[None])).sample(generator)[0])
        frame, _, terminated, truncated, _ = env.step(2 if up else 3)
        if terminated or truncated:
            frame, _ = env.reset()
            previous = np.zeros((80, 80), np.int8)
    results.put(steps / (time.perf_counter() - start))
    env.close()


def two_bare_loops(steps: int, seed: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=bare_gymnasium_loop, args=(steps, seed + i, barrier, results))
                 for i in range(2)]
    for process in processes:
        process.start()
    rates = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def ale_vector_loop(policy: Policy, envs: AtariVectorEnvs, steps: int, seed: int) -> float:
    """ale-py's vector env with 2 threads, batched preprocessing and forward pass."""
    generator = torch.Generator().manual_seed(seed)
    obs = envs.reset(list(range(seed, seed + envs.num_envs)))
    active = np.ones(envs.num_envs, bool)
    start = time.perf_counter()
    for _ in range(steps // envs.num_envs):
        with torch.no_grad():
            actions = policy.distribution(torch.as_tensor(obs)).sample(generator)
        obs, *_ = envs.step(actions.numpy(), active)
    return (steps // envs.num_envs) * envs.num_envs / (time.perf_counter() - start)


def pool_rate(pool, weights, steps: int) -> float:
    start = time.perf_counter()
    batch = pool.sample(weights, num_steps=steps)
    return batch["env_steps"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8000, help="env steps per measurement (all processes)")
    parser.add_argument("--envs", type=int, default=10, help="K: envs per vectorized sampler")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = make_policy()
    weights = {k: v.numpy() for k, v in policy.state_dict().items()}
    vector = AtariVectorEnvs(vector_settings(ENV), args.envs, threads=2, pong=True)
    local = LocalRolloutPool(ENV, SPEC, seed=0, workers=1, envs_per_worker=args.envs,
                             threads_per_worker=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    remote = RayRolloutPool(ENV, SPEC, seed=0, workers=2, envs_per_worker=args.envs // 2,
                            num_cpus_per_actor=0.995)
    remote.sample(weights, num_steps=400)  # actors built and warm
    rows = {"bare gymnasium x2 (2 processes)": [], "ale-py vector (2 threads)": [],
            "runyard local (1 worker, 2 threads)": [], "runyard ray (2 actors, 1 thread each)": []}
    loads = []
    for r in range(args.repeats):
        rates = rows.values()
        for rate_list, measure in zip(rates, (
            lambda: two_bare_loops(args.steps // 2, seed=r),
            lambda: ale_vector_loop(policy, vector, args.steps, seed=r),
            lambda: pool_rate(local, weights, args.steps),
            lambda: pool_rate(remote, weights, args.steps),
        )):
            rate_list.append(measure())
        loads.append(describe().split("load average ")[1].split(",")[0])
    remote.close()
    local.close()
    vector.close()
    ray.shutdown()

    medians = {name: statistics.median(values) for name, values in rows.items()}
    best_raw = max(medians["bare gymnasium x2 (2 processes)"], medians["ale-py vector (2 threads)"])
    print(f"machine: {describe()}")
    print(f"load average (1/5/15 min) after each round: {', '.join(loads)}")
    print(f"Pong from pixels, {args.steps} env steps per measurement, K = {args.envs}, median of {args.repeats}")
    print(f"{'sampler':<40}{'env steps/s':>13}{'/ best raw':>12}")
    for name, value in medians.items():
        print(f"{name:<40}{value:>13.0f}{value / best_raw:>12.2f}")
    print("all rounds, steps/s: " + "; ".join(f"{name}: {np.round(v).astype(int).tolist()}" for name, v in rows.items()))


if __name__ == "__main__":
    main()
