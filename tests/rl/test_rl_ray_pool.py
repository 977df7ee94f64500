"""RayRolloutPool on a real local Ray: same batches as the in-process pool, and an actor
killed mid-iteration is replaced, reseeded from (job seed, iteration, slot), without losing
the iteration."""

import threading

import numpy as np
import pytest
import ray

from runyard.execute.rollout_pool import RayRolloutPool
from runyard.workloads import get
from runyard.workloads.base import WorkloadContext
from runyard.workloads.blocks import EnvSpec
from runyard.workloads.rl.policies import Policy, PolicySpec, weights_of
from runyard.workloads.rl.rollout import LocalRolloutPool, make_env, worker_seed

CARTPOLE = EnvSpec(id="CartPole-v1")
SPEC = PolicySpec(hidden=(16,))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def weights():
    env = make_env(CARTPOLE)
    return weights_of(Policy(SPEC, env.observation_space, env.action_space))


def assert_same_batch(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, b[key], err_msg=key)


def test_same_seed_same_batches_locally_and_on_actors(local_ray, weights):
    local = LocalRolloutPool(CARTPOLE, SPEC, seed=7, workers=2, envs_per_worker=2)
    remote = RayRolloutPool(CARTPOLE, SPEC, seed=7, workers=2, envs_per_worker=2)
    try:
        for _ in range(2):
            assert_same_batch(local.sample(weights, num_episodes=5), remote.sample(weights, num_episodes=5))
        assert_same_batch(local.sample(weights, num_steps=300), remote.sample(weights, num_steps=300))
        for a, b in zip(local.evaluate([weights] * 3, episodes=2), remote.evaluate([weights] * 3, episodes=2)):
            assert_same_batch(a, b)
        assert remote.last_stats["env_steps_per_s"] > 0
    finally:
        local.close()
        remote.close()


@pytest.mark.slow
def test_a_killed_actor_is_replaced_and_its_share_resampled(local_ray, weights):
    # What the iteration must give: slot 0 as a fresh worker reseeded for call 1, slot 1 as it was.
    reference = LocalRolloutPool(CARTPOLE, SPEC, seed=3, workers=2, envs_per_worker=1)
    reference._workers[0].reseed(worker_seed(3, 1, 0))
    expected = reference.sample(weights, num_steps=16000)
    reference.close()

    pool = RayRolloutPool(CARTPOLE, SPEC, seed=3, workers=2, envs_per_worker=1)
    victim = pool.actors[0]
    ray.get(victim.__ray_ready__.remote())  # both actors up before the clock starts
    ray.get(pool.actors[1].__ray_ready__.remote())
    killer = threading.Timer(0.3, ray.kill, [victim])  # mid-iteration: each share takes seconds
    killer.start()
    try:
        batch = pool.sample(weights, num_steps=16000)
    finally:
        killer.cancel()
    assert pool.replaced_actors == 1 and pool.actors[0] is not victim
    assert_same_batch(batch, expected | {"env_steps": batch["env_steps"], "sample_time_s": batch["sample_time_s"]})
    again = pool.sample(weights, num_episodes=4)  # the replacement keeps working
    assert len(again["episode_returns"]) == 4
    pool.close()


def test_a_workload_runs_on_the_ray_pool_like_on_the_local_one(local_ray):
    cls = get("rl.pg")
    config = cls.Config(batch_episodes=4)
    runs = []
    for parallel in ({}, {"rollout_pool": RayRolloutPool}):
        workload = cls()
        workload.setup(config, WorkloadContext(seed=1, env={"id": "CartPole-v1"},
                                               rollout={"workers": 2, "envs_per_worker": 2},
                                               resources={"cpus_per_trial": 2}, parallel=parallel))
        runs.append([workload.step() for _ in range(2)])
        workload.close()
    for local, remote in zip(*runs):
        for key in ("episode_return_mean", "episode_len_mean", "env_steps_total", "entropy"):
            assert local[key] == remote[key], key
