"""Sampler efficiency on Atari Pong from pixels.

efficiency = (env steps/s of RayRolloutPool with 2 actors) / (2 x env steps/s of one plain
             process loop doing the same env steps and policy forward passes)

Both sides step the same preprocessed ALE/Pong-v5 vector envs (K per process) with the same
200-unit policy; the plain loop only steps and samples actions, the pool also records
trajectories and ships them back as numpy arrays through Ray's object store. Measurements
alternate (loop, pool, loop, pool ...) and the table reports medians. Target >= 0.85 on a
machine with at least 2 free cores.

    PYTHONPATH=platform python benchmarks/rollout_throughput.py [--steps 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
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
from runyard.workloads.rl.policies import Policy, PolicySpec, weights_of  # noqa: E402
from runyard.workloads.rl.rollout import LocalRolloutPool, make_env  # noqa: E402

ENV = {"id": "ALE/Pong-v5", "kwargs": {}, "max_episode_steps": None}
SPEC = PolicySpec(hidden=(200,), activation="relu", head="bernoulli")


def plain_loop(policy: Policy, envs_per_process: int, steps: int, seed: int) -> float:
    """Env steps per second of the simplest loop: step K envs, one batched forward pass per step."""
    envs = gym.vector.SyncVectorEnv([lambda: make_env(ENV) for _ in range(envs_per_process)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    generator = torch.Generator().manual_seed(seed)
    obs, _ = envs.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps // envs_per_process):
        with torch.no_grad():
            actions = policy.distribution(torch.as_tensor(obs)).sample(generator)
        obs, *_ = envs.step(actions.numpy())
    elapsed = time.perf_counter() - start
    envs.close()
    return (steps // envs_per_process) * envs_per_process / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per process per measurement")
    parser.add_argument("--envs-per-worker", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = make_env(ENV)
    torch.manual_seed(0)
    policy = Policy(SPEC, env.observation_space, env.action_space)
    env.close()
    weights = weights_of(policy)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    pool = RayRolloutPool(ENV, SPEC.model_dump(), seed=0, workers=2, envs_per_worker=args.envs_per_worker)
    local = LocalRolloutPool(ENV, SPEC.model_dump(), seed=0, workers=1, envs_per_worker=args.envs_per_worker)
    pool.sample(weights, num_steps=2 * 200)  # warm up: actors built, envs reset once
    loop_rates, pool_rates, local_rates = [], [], []
    for r in range(args.repeats):
        loop_rates.append(plain_loop(policy, args.envs_per_worker, args.steps, seed=r))
        start = time.perf_counter()
        batch = pool.sample(weights, num_steps=2 * args.steps)
        pool_rates.append(len(batch["rewards"]) / (time.perf_counter() - start))
        start = time.perf_counter()
        batch = local.sample(weights, num_steps=args.steps)
        local_rates.append(len(batch["rewards"]) / (time.perf_counter() - start))
    pool.close()
    local.close()
    ray.shutdown()

    loop, remote, in_process = (statistics.median(x) for x in (loop_rates, pool_rates, local_rates))
    print(f"machine: {describe()}")
    print(f"Pong from pixels, {args.envs_per_worker} envs per process, {args.steps} steps per process, "
          f"median of {args.repeats}")
    print(f"{'sampler':<40}{'env steps/s':>14}{'ratio':>10}")
    print(f"{'plain loop, 1 process':<40}{loop:>14.0f}{1.0:>10.2f}")
    print(f"{'LocalRolloutPool, 1 worker':<40}{in_process:>14.0f}{in_process / loop:>10.2f}")
    print(f"{'RayRolloutPool, 2 actors':<40}{remote:>14.0f}{remote / loop:>10.2f}")
    print(f"sampler efficiency (2 actors / 2 x plain loop): {remote / (2 * loop):.2f}  (target >= 0.85)")
    print(f"all runs, steps/s: loop {np.round(loop_rates).tolist()}, ray {np.round(pool_rates).tolist()}, "
          f"local {np.round(local_rates).tolist()}")


if __name__ == "__main__":
    main()
