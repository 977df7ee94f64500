"""Each algorithm, with its shipped defaults and a fixed seed, reaches mean return >= 475 on
CartPole-v1 (the gymnasium "solved" threshold) within an iteration budget."""

import time

import pytest

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

BUDGETS = {  # iterations; the runs observed take well under half of these
    "rl.pg": ({"workers": 1, "envs_per_worker": 8}, 150),
    "rl.trpo": ({"workers": 1, "envs_per_worker": 4}, 60),
    "rl.cem": ({"workers": 1, "envs_per_worker": 2}, 40),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_reaches_475_on_cartpole(name):
    rollout, budget = BUDGETS[name]
    cls = get(name)
    workload = cls()
    workload.setup(cls.Config(), WorkloadContext(seed=0, env={"id": "CartPole-v1"}, rollout=rollout))
    start, best = time.perf_counter(), 0.0
    try:
        for iteration in range(1, budget + 1):
            metrics = workload.step()
            best = max(best, metrics.get("episode_return_mean", 0.0))
            if best >= 475:
                break
    finally:
        workload.close()
    print(f"{name}: {best:.1f} after {iteration} iterations, {metrics['env_steps_total']:.0f} env steps, "
          f"{time.perf_counter() - start:.1f} s")
    assert best >= 475
