"""Pong sampler throughput: runyard's samplers side by side with the raw emulator baselines.

Every row steps ALE/Pong-v5's dynamics (frameskip 4, sticky actions 0.25). The first is the
machine's raw emulation rate, what a sampler is measured against (target: >= 0.8 of it):

  raw emulation        one process per core, each stepping one gymnasium ALE/Pong-v5 env with
                       random actions (no preprocessing, no policy), all at once, rates added

The others include the Pong-from-pixels preprocessing and the 200-unit policy's forward pass
and action sampling:

  bare gymnasium x2    two processes, each stepping one gymnasium ALE/Pong-v5 env in a plain
                       Python loop (preprocess, forward, step), their rates added
  ale-py vector        one process, ale-py's AtariVectorEnv (Pong-v5 settings, 2 threads),
                       batched preprocessing and one forward pass for all K envs
  runyard local        LocalRolloutPool: 1 worker of K envs on 2 emulator threads, in process
  runyard ray          RayRolloutPool: 2 actors of K/2 envs, 1 thread each
  runyard processes    ProcessRolloutPool: one process per core, K/cores envs each (what
                       jobs/pong_pg.yaml gets: backend processes, workers auto)

runyard's rows also record the trajectories and assemble the batch (and ship it through the
object store, for Ray). Rounds alternate between the rows; the table gives medians, the ratio
to raw emulation measured in the same run (of the medians, and the median of each round's
own ratio), and the ratio to the best of the two policy-driven baselines.

    PYTHONPATH=platform python benchmarks/rollout_throughput.py [--steps 8000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
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
from runyard.workloads.rl.rollout_processes import ProcessRolloutPool  # noqa: E402

ENV = EnvSpec(id="ALE/Pong-v5", preprocess="pong")
SPEC = PolicySpec(hidden=(200,), activation="relu", head="bernoulli")
OBS_SPACE, ACTION_SPACE = gym.spaces.Box(-1, 1, (80, 80), np.int8), gym.spaces.Discrete(2)


def make_policy() -> Policy:
    torch.manual_seed(0)
    policy = Policy(SPEC, OBS_SPACE, ACTION_SPACE)
    policy.requires_grad_(False)
    return policy


def raw_emulation_loop(steps: int, seed: int, start_barrier, results) -> None:
    """One process: a gymnasium Pong-v5 env stepped with random actions, nothing else."""
    register_ale()
    env = gym.make("ALE/Pong-v5")
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start_barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    results.put(steps / (time.perf_counter() - start))
    env.close()


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


def parallel_loops(loop, processes: int, steps: int, seed: int) -> float:
    """`loop` in `processes` processes started together (a barrier), their rates added."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    started = [context.Process(target=loop, args=(steps, seed + i, barrier, results)) for i in range(processes)]
    for process in started:
        process.start()
    try:
        rates = [results.get(timeout=600) for _ in started]
    finally:
        for process in started:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
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
    cores = len(os.sched_getaffinity(0))
    processes = ProcessRolloutPool(ENV, SPEC, seed=0, workers=cores, envs_per_worker=max(1, args.envs // cores))
    processes.sample(weights, num_steps=400)
    raw_name = f"raw emulation ({cores} processes, random actions)"
    rows = {raw_name: [], "bare gymnasium x2 (2 processes)": [], "ale-py vector (2 threads)": [],
            "runyard local (1 worker, 2 threads)": [], "runyard ray (2 actors, 1 thread each)": [],
            f"runyard processes ({cores} x {max(1, args.envs // cores)} envs)": []}
    loads = []
    for r in range(args.repeats):
        for rate_list, measure in zip(rows.values(), (
            lambda: parallel_loops(raw_emulation_loop, cores, args.steps // cores, seed=r),
            lambda: parallel_loops(bare_gymnasium_loop, 2, args.steps // 2, seed=r),
            lambda: ale_vector_loop(policy, vector, args.steps, seed=r),
            lambda: pool_rate(local, weights, args.steps),
            lambda: pool_rate(remote, weights, args.steps),
            lambda: pool_rate(processes, weights, args.steps),
        )):
            rate_list.append(measure())
        loads.append(describe().split("load average ")[1].split(",")[0])
    processes.close()
    remote.close()
    local.close()
    vector.close()
    ray.shutdown()

    medians = {name: statistics.median(values) for name, values in rows.items()}
    raw = medians[raw_name]
    best_policy_driven = max(medians["bare gymnasium x2 (2 processes)"], medians["ale-py vector (2 threads)"])
    print(f"machine: {describe()}")
    print(f"load average (1/5/15 min) after each round: {', '.join(loads)}")
    print(f"Pong from pixels, {args.steps} env steps per measurement, K = {args.envs}, median of {args.repeats}")
    # On a shared machine the load moves between rounds; a round's own ratio compares
    # measurements seconds apart, so its median says more than the ratio of medians.
    print(f"{'sampler':<44}{'env steps/s':>13}{'/ raw':>8}{'/ raw per round':>17}{'/ best policy-driven':>22}")
    for name, value in medians.items():
        per_round = statistics.median(v / r for v, r in zip(rows[name], rows[raw_name]))
        print(f"{name:<44}{value:>13.0f}{value / raw:>8.2f}{per_round:>17.2f}{value / best_policy_driven:>22.2f}")
    print("all rounds, steps/s: " + "; ".join(f"{name}: {np.round(v).astype(int).tolist()}" for name, v in rows.items()))


if __name__ == "__main__":
    main()
