"""ProcessRolloutPool on real gymnasium and ALE envs: the same batches as the in-process pool
for the same seed (fresh, restored, CEM's evaluations), a killed worker replaced with its
share resampled, and no process left behind, also when the pool's own process is killed."""

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import psutil
import torch

from runyard.workloads.blocks import EnvSpec, RolloutSpec
from runyard.workloads.rl.layout import resolve_layout
from runyard.workloads.rl.policies import Policy, PolicySpec, weights_of
from runyard.workloads.rl.rollout import LocalRolloutPool, worker_seed
from runyard.workloads.rl.rollout_processes import ProcessRolloutPool

CARTPOLE = EnvSpec(id="CartPole-v1")
SPEC = PolicySpec(hidden=(16,))
PONG = EnvSpec(id="ALE/Pong-v5", preprocess="pong")
PONG_SPEC = PolicySpec(hidden=(8,), head="bernoulli")
KEYS = ("obs", "actions", "rewards", "logp", "terminated", "truncated", "ends", "final_obs",
        "episode_returns", "episode_lengths", "env_steps")


def weights(spec, observation_space, action_space, seed=0):
    torch.manual_seed(seed)
    return weights_of(Policy(spec, observation_space, action_space))


def cartpole_weights(seed=0):
    return weights(SPEC, gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Discrete(2), seed)


def assert_same(a, b):
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def family(process: psutil.Process) -> list[psutil.Process]:
    """A process and everything it started (the worker's resource tracker)."""
    return [process, *process.children(recursive=True)]


def all_gone(processes: list[psutil.Process], timeout_s: float = 15.0) -> bool:
    """Every one of them has exited (a zombie left to its parent counts) within timeout_s."""
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return not [p for p in alive if running(p)]


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_auto_is_one_process_per_cpu_of_the_trial():
    for cpus, workers in ((2, 2), (16, 16), (0.5, 1)):
        layout = resolve_layout(RolloutSpec(backend="processes", workers="auto", envs_per_worker=5), cpus)
        assert (layout.workers, layout.threads_per_worker, layout.driver_cpus) == (workers, 1, cpus)


def test_the_same_batches_as_the_in_process_pool_fresh_restored_and_evaluated():
    w = cartpole_weights()
    pools = [ProcessRolloutPool(CARTPOLE, SPEC, seed=7, workers=2, envs_per_worker=2),
             LocalRolloutPool(CARTPOLE, SPEC, seed=7, workers=2, envs_per_worker=2)]
    try:
        runs = [[pool.sample(w, num_steps=301), pool.sample(w, num_episodes=5),
                 pool.sample(w, num_steps=200, until_point=True)] for pool in pools]
        for pool in pools:  # a restore: every worker reseeded from the checkpoint's call count
            pool.load_state_dict({"calls": 1})
            runs[pools.index(pool)].append(pool.sample(w, num_steps=120))
        # CEM: several weights in one call, each in its own shared block
        evaluations = [pool.evaluate([cartpole_weights(1), cartpole_weights(2), w], episodes=2) for pool in pools]
    finally:
        for pool in pools:
            pool.close()
    for processed, local in zip(*runs):
        assert_same(processed, local)
    for processed, local in zip(*evaluations):
        assert_same(processed, local)
    assert len(runs[0][0]["rewards"]) == 301 and len(runs[0][1]["episode_returns"]) == 5


def test_the_same_batches_on_three_pong_envs():
    w = weights(PONG_SPEC, gym.spaces.Box(-1, 1, (80, 80), np.int8), gym.spaces.Discrete(2))
    pools = [ProcessRolloutPool(PONG, PONG_SPEC, seed=3, workers=1, envs_per_worker=3),
             LocalRolloutPool(PONG, PONG_SPEC, seed=3, workers=1, envs_per_worker=3)]
    try:
        runs = [[pool.sample(w, num_steps=150), pool.sample(w, num_steps=150)] for pool in pools]
    finally:
        for pool in pools:
            pool.close()
    for processed, local in zip(*runs):
        assert_same(processed, local)
    assert runs[0][1]["obs"].shape == (150, 80, 80) and runs[0][1]["obs"].any()


def test_a_killed_worker_is_replaced_and_its_share_resampled_then_nothing_is_left():
    w = cartpole_weights()
    pool = ProcessRolloutPool(CARTPOLE, SPEC, seed=4, workers=2, envs_per_worker=2)
    local = LocalRolloutPool(CARTPOLE, SPEC, seed=4, workers=2, envs_per_worker=2)
    try:
        assert_same(pool.sample(w, num_steps=100), local.sample(w, num_steps=100))
        started = [family(psutil.Process(p.pid)) for p in pool.processes]
        killed = pool.processes[0].pid
        os.kill(killed, signal.SIGKILL)
        pool.processes[0].wait(10)
        batch = pool.sample(w, num_steps=100)
        # Worker 0 starts over from (job seed, this call, 0); worker 1 goes on.
        local._workers[0].reseed(worker_seed(4, 2, 0))
        assert_same(batch, local.sample(w, num_steps=100))
        assert pool.replaced_workers == 1 and pool.processes[0].pid != killed
        started.append(family(psutil.Process(pool.processes[0].pid)))
    finally:
        pool.close()
        local.close()
    assert all_gone([p for group in started for p in group])


OWNER = """
import sys, time
from runyard.workloads.blocks import EnvSpec, RolloutSpec
from runyard.workloads.rl.layout import resolve_layout
from runyard.workloads.rl.policies import PolicySpec
from runyard.workloads.rl.rollout_processes import ProcessRolloutPool
pool = ProcessRolloutPool(EnvSpec(id="CartPole-v1"), PolicySpec(hidden=(16,)), seed=0, workers=2, envs_per_worker=1)
print(" ".join(str(p.pid) for p in pool.processes), flush=True)
time.sleep(120)
"""


def test_workers_end_with_a_killed_pool_process():
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 2
        workers = [p for pid in pids for p in family(psutil.Process(pid))]
        owner.kill()
        owner.wait(10)
        assert all_gone(workers)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
