"""rl.pg, rl.trpo, rl.cem as workloads: registry, metrics, checkpoints, artifacts, spec checks."""

import gymnasium as gym
import numpy as np
import pydantic
import pytest
import torch

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

CARTPOLE = {"id": "CartPole-v1"}
ROLLOUT = {"workers": 2, "envs_per_worker": 2}
SMALL = {
    "rl.pg": {"batch_episodes": 4},
    "rl.trpo": {"steps_per_iter": 400, "value_iters": 5},
    "rl.cem": {"population": 6, "episodes_per_candidate": 1},
}
TIMING = {"env_steps_per_s", "sample_time_s", "learn_time_s"}


def make(name, seed=0, env=CARTPOLE, rollout=ROLLOUT, tmp_path=None, **config):
    cls = get(name)
    workload = cls()
    context = WorkloadContext(seed=seed, env=env, rollout=rollout, resources={"cpus_per_trial": 2})
    workload.setup(cls.Config(**(SMALL[name] | config)), context)
    return workload


@pytest.mark.parametrize("name", ["rl.pg", "rl.trpo", "rl.cem"])
def test_metrics_are_declared(name):
    workload = make(name)
    metrics = workload.step()
    workload.close()
    assert set(metrics) <= set(workload.metrics)
    assert {"env_steps_total", "env_steps_per_s", "sample_time_s", "learn_time_s", "entropy"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("name", ["rl.pg", "rl.trpo", "rl.cem"])
def test_restore_continues_deterministically(name, tmp_path):
    """A restore continues from the saved policy, optimizer and random streams with the envs
    reseeded from (job seed, iteration): two restores of one checkpoint run identically. CEM
    scores every candidate on freshly seeded episodes, so it continues exactly as well."""
    config = {"policy": {"normalize_obs": True, "hidden": (8,)}}
    if name == "rl.pg":
        config["baseline"] = True
    uninterrupted = make(name, seed=3, **config)
    for _ in range(2):
        uninterrupted.step()
    uninterrupted.save(tmp_path)
    saved = {k: v.clone() for k, v in uninterrupted.policy.state_dict().items()}
    expected = [uninterrupted.step() for _ in range(2)]
    uninterrupted.close()

    runs = []
    for _ in range(2):
        restored = make(name, seed=3, **config)
        restored.restore(tmp_path)
        for key, value in restored.policy.state_dict().items():
            assert value.equal(saved[key]), key
        runs.append([restored.step() for _ in range(2)])
        restored.close()
    comparisons = [(runs[0], runs[1])] + ([(expected, runs[0])] if name == "rl.cem" else [])
    for first, second in comparisons:
        for want, have in zip(first, second):
            assert want.keys() == have.keys()
            for key in want.keys() - TIMING:
                assert have[key] == want[key], key


def test_pg_restored_with_other_learning_rates_trains_with_them(tmp_path):
    """A population-based sweep's member goes on from another member's checkpoint with its
    own, perturbed rates: the optimizers' saved rates must not win over the config's."""
    donor = make("rl.pg", lr=0.01, baseline=True, value_lr=0.01)
    donor.step()
    donor.save(tmp_path)
    donor.close()
    member = make("rl.pg", lr=0.002, baseline=True, value_lr=0.003)
    member.restore(tmp_path)
    assert [g["lr"] for g in member.optimizer.param_groups] == [0.002]
    assert [g["lr"] for g in member.value_optimizer.param_groups] == [0.003]
    assert member.optimizer.state  # Adam's moments came with the checkpoint
    member.close()

def test_same_seed_same_run_other_seed_other_run():
    runs = []
    for seed in (1, 1, 2):
        workload = make("rl.pg", seed=seed)
        runs.append([workload.step()["episode_return_mean"] for _ in range(2)])
        workload.close()
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_learning_curve_artifact(tmp_path):
    workload = make("rl.cem")
    workload.step()
    workload.step()
    workload.artifacts(tmp_path)
    workload.close()
    png = (tmp_path / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


class MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,))
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, True, False, {}


gym.register("RunyardTestMultiDiscrete-v0", entry_point=MultiDiscreteEnv)


def problems(name, env=CARTPOLE, rollout=ROLLOUT, cpus=2, **config):
    cls = get(name)
    return cls.check_spec(cls.Config(**config), WorkloadContext(env=env, rollout=rollout,
                                                                resources={"cpus_per_trial": cpus}))


@pytest.mark.parametrize("name", ["rl.pg", "rl.trpo", "rl.cem"])
def test_a_good_spec_has_no_problems(name):
    assert problems(name) == []
    assert problems(name, env={"id": "ALE/Pong-v5"}, policy={"torso": "conv", "head": "bernoulli"}) == []


def test_unknown_env_says_how_to_list_and_register():
    [problem] = problems("rl.pg", env={"id": "CartPol-v1"})
    assert problem.startswith("env.id:") and "pprint_registry" in problem and "gymnasium.register" in problem


def test_unsupported_action_space_names_the_supported_ones():
    [problem] = problems("rl.trpo", env={"id": "RunyardTestMultiDiscrete-v0"})
    assert problem.startswith("env.id:") and "MultiDiscrete" in problem and "Discrete, Box" in problem


def test_conv_policy_on_vector_observations():
    [problem] = problems("rl.pg", policy={"torso": "conv"})
    assert problem.startswith("config.policy.torso:") and "(4,)" in problem and "mlp" in problem


def test_workers_beyond_the_trials_cpus_and_bad_head():
    found = problems("rl.cem", rollout={"workers": 3, "envs_per_worker": 2}, policy={"head": "gaussian"})
    assert any(p.startswith("rollout.workers: 3 actors") for p in found)
    assert any(p.startswith("config.policy.head:") for p in found)
    assert problems("rl.pg", env={"id": "Acrobot-v1"}, policy={"head": "bernoulli"})[0].startswith(
        "config.policy.head: a bernoulli head needs 2 actions")


def test_missing_env_block():
    assert problems("rl.pg", env=None)[0].startswith("env.id: required")


def test_zero_workers_is_refused_by_the_rollout_block_itself():
    with pytest.raises(pydantic.ValidationError, match="workers"):
        problems("rl.pg", rollout={"workers": 0})


def test_rollout_actors_must_fit_the_trials_cpus():
    [problem] = problems("rl.pg", rollout={"workers": 3, "envs_per_worker": 1}, cpus=2)
    assert problem.startswith("rollout.workers: 3 actors") and "resources.cpus_per_trial = 2" in problem
    assert "workers: auto" in problem
    assert problems("rl.pg", rollout={"workers": "auto", "envs_per_worker": 1}, cpus=2) == []


def test_pg_entropy_bonus_alone_makes_the_policy_less_certain():
    """With every return zero the standardized advantages are zero, so the only gradient left
    is the bonus β∇H: one update raises the policy's entropy on the batch's states, and with
    β = 0 leaves the policy as it was."""
    entropies = []
    for coef in (0.0, 0.1):
        workload = make("rl.pg", entropy_coef=coef, lr=1e-4)
        # away from the near-uniform start, where a step of Adam (lr per parameter) overshoots
        torch.nn.init.normal_(workload.policy.net[1][-1].weight, std=1.0)
        batch = workload.pool.sample(workload.weights(), num_episodes=4)
        batch["rewards"][:] = 0
        obs = torch.as_tensor(batch["obs"])
        with torch.no_grad():
            before = float(workload.policy.distribution(obs).entropy().mean())
        workload.update(batch)
        with torch.no_grad():
            entropies.append((before, float(workload.policy.distribution(obs).entropy().mean())))
        workload.close()
    assert entropies[0][1] == entropies[0][0]
    assert entropies[1][1] > entropies[1][0]
