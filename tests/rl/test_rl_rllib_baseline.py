"""rllib.<ALGO> workloads: name lookup, config checks, and a real (tiny) PPO run with a
checkpoint round trip."""

import pytest

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext

CARTPOLE = WorkloadContext(seed=0, env={"id": "CartPole-v1"})


def test_any_rllib_name_gives_a_bound_class():
    ppo, dqn = get("rllib.PPO"), get("rllib.DQN")
    assert ppo.algorithm == "PPO" and dqn.algorithm == "DQN" and ppo is get("rllib.PPO")
    assert {"episode_return_mean", "env_steps_total", "entropy"} <= set(ppo.metrics)
    with pytest.raises(KeyError, match="known: .*PPO"):
        get("rllib.NoSuchAlgo")


def test_config_sections_are_checked_against_the_algorithm():
    ppo = get("rllib.PPO")
    good = ppo.Config(training={"lr": 1e-3, "gamma": 0.99}, env_runners={"num_env_runners": 1})
    assert ppo.check_spec(good, CARTPOLE) == []
    [problem] = ppo.check_spec(ppo.Config(training={"lrr": 1e-3}), CARTPOLE)
    assert problem.startswith("config.training.lrr:") and "lr," in problem
    assert get("rllib.DQN").check_spec(get("rllib.DQN").Config(training={"clip_param": 0.2}), CARTPOLE)
    assert ppo.check_spec(good, WorkloadContext(env={"id": "NoSuchEnv-v0"}))[0].startswith("env.id:")
    dqn = get("rllib.DQN")
    [problem] = dqn.check_spec(dqn.Config(), WorkloadContext(env={"id": "Pendulum-v1"}))
    assert problem.startswith("env.id:") and "Box" in problem and "supports Discrete" in problem
    with pytest.raises(ValueError):
        ppo.Config(trainig={"lr": 1e-3})  # an unknown section is a config error


@pytest.mark.slow
def test_ppo_trains_saves_and_restores(tmp_path):
    import ray

    ppo = get("rllib.PPO")
    config = ppo.Config(
        training={"train_batch_size_per_learner": 256, "minibatch_size": 128, "num_epochs": 2, "lr": 1e-3},
        env_runners={"num_env_runners": 0},
        rl_module={"model_config": {"fcnet_hiddens": [32]}},
    )
    workload = ppo()
    workload.setup(config, CARTPOLE)
    try:
        first = workload.step()
        assert set(first) <= set(ppo.metrics)
        assert first["env_steps_total"] >= 256 and "episode_return_mean" in first and "entropy" in first
        workload.save(tmp_path)
    finally:
        workload.close()
    assert not ray.is_initialized()  # the Ray it started for itself is gone

    restored = ppo()
    restored.setup(config, CARTPOLE)
    try:
        restored.restore(tmp_path)
        second = restored.step()
        assert second["env_steps_total"] >= first["env_steps_total"] + 256
    finally:
        restored.close()
