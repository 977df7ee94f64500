"""RolloutWorker and LocalRolloutPool on real gymnasium envs: the batch layout, envs that live
across batches, reproducibility from the job seed and after a restore."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from runyard.workloads.blocks import EnvSpec
from runyard.workloads.rl.policies import Actor, Policy, PolicySpec, weights_of
from runyard.workloads.rl.rollout import LocalRolloutPool, RolloutWorker, make_env

CARTPOLE = EnvSpec(id="CartPole-v1")
SPEC = PolicySpec(hidden=(16,))


def cartpole_weights(seed=0):
    env = make_env(CARTPOLE)
    torch.manual_seed(seed)
    return weights_of(Policy(PolicySpec(hidden=(16,)), env.observation_space, env.action_space))


def test_episode_batches_are_whole_episodes_laid_out_by_segment():
    worker = RolloutWorker(CARTPOLE, SPEC, envs_per_worker=3, seed=0)
    batch = worker.run(cartpole_weights(), seed=1, num_episodes=7)
    worker.close()
    assert len(batch["episode_returns"]) == 7
    n = len(batch["rewards"])
    assert batch["obs"].shape == (n, 4) and batch["actions"].shape == (n,) and batch["logp"].shape == (n,)
    assert batch["ends"].sum() == 7 == len(batch["final_obs"])
    assert batch["ends"][-1]
    assert n == batch["episode_lengths"].sum()
    # every episode's rewards add up to its reported return, in segment order
    segment_sums = np.add.reduceat(batch["rewards"], np.r_[0, np.flatnonzero(batch["ends"])[:-1] + 1])
    np.testing.assert_allclose(np.sort(segment_sums), np.sort(batch["episode_returns"]))
    assert np.all(batch["terminated"] | batch["truncated"] == batch["ends"])
    assert batch["env_steps"] >= n


def test_step_batches_cut_segments_with_their_next_observation():
    worker = RolloutWorker(CARTPOLE, SPEC, envs_per_worker=2, seed=0)
    batch = worker.run(cartpole_weights(), seed=3, num_steps=101)
    worker.close()
    assert len(batch["rewards"]) == 101
    assert batch["ends"].sum() == len(batch["final_obs"])
    cut = batch["ends"] & ~batch["terminated"] & ~batch["truncated"]
    assert cut.sum() == 2  # each env's last step ends its segment without ending the episode
    # the logp the worker recorded is the policy's log-probability of the action it took
    policy = Policy(PolicySpec(hidden=(16,)), worker.envs.single_observation_space, worker.envs.single_action_space)
    policy.load_state_dict({k: torch.as_tensor(v) for k, v in cartpole_weights().items()})
    with torch.no_grad():
        logp_recomputed = policy.distribution(torch.as_tensor(batch["obs"])).log_prob(torch.as_tensor(batch["actions"]))
    np.testing.assert_allclose(logp_recomputed.numpy(), batch["logp"], rtol=1e-5, atol=1e-6)


def test_pool_is_reproducible_from_the_job_seed():
    weights = cartpole_weights()
    batches = []
    for seed in (5, 5, 6):
        pool = LocalRolloutPool(CARTPOLE, SPEC, seed=seed, workers=2, envs_per_worker=2)
        batches.append(pool.sample(weights, num_episodes=6))
        batches.append(pool.sample(weights, num_episodes=6))
        assert pool.last_stats["env_steps"] > 0 and pool.last_stats["env_steps_per_s"] > 0
        pool.close()
    for key in ("obs", "actions", "rewards", "episode_returns"):
        np.testing.assert_array_equal(batches[0][key], batches[2][key])
        np.testing.assert_array_equal(batches[1][key], batches[3][key])
    assert not np.array_equal(batches[0]["obs"][:5], batches[1]["obs"][:5])  # the envs went on
    assert not np.array_equal(batches[0]["obs"][:5], batches[4]["obs"][:5])


def test_pool_splits_work_and_evaluates_candidates():
    pool = LocalRolloutPool(CARTPOLE, SPEC, seed=0, workers=3, envs_per_worker=1)
    batch = pool.sample(cartpole_weights(), num_steps=100)
    assert len(batch["rewards"]) == 100
    results = pool.evaluate([cartpole_weights(1), cartpole_weights(2)], episodes=2)
    assert [len(r["episode_returns"]) for r in results] == [2, 2]
    pool.close()


def test_zero_workers_is_an_error():
    with pytest.raises(ValueError, match="workers >= 1"):
        LocalRolloutPool(CARTPOLE, SPEC, seed=0, workers=0, envs_per_worker=1)


def test_continuous_actions_on_mujoco():
    env_spec = EnvSpec(id="Hopper-v5")
    spec = PolicySpec(hidden=(8,), normalize_obs=True)
    env = make_env(env_spec)
    weights = weights_of(Policy(spec, env.observation_space, env.action_space))
    worker = RolloutWorker(env_spec, spec, envs_per_worker=2, seed=0)
    batch = worker.run(weights, seed=0, num_steps=50)
    worker.close()
    assert batch["actions"].shape == (50, 3) and batch["obs"].shape == (50, 11)
    assert isinstance(env.action_space, gym.spaces.Box)


def test_envs_live_across_batches_and_episodes_count_whole():
    worker = RolloutWorker(CARTPOLE, SPEC, envs_per_worker=2, seed=4)
    first = worker.run(cartpole_weights(), num_steps=4)  # 2 steps per env: no episode ends yet
    second = worker.run(cartpole_weights(), num_steps=400)
    assert first["ends"].sum() == 2 and not first["terminated"].any()
    # each env's second batch starts from the observation its first batch was cut at
    np.testing.assert_array_equal(second["obs"][0], first["final_obs"][0])
    np.testing.assert_array_equal(second["obs"][200], first["final_obs"][1])
    # episodes begun in the first batch are reported whole: every step is in some episode
    assert second["episode_lengths"].sum() + worker.running_length.sum() == 404
    worker.close()


def test_a_restored_pool_continues_deterministically():
    weights = cartpole_weights()
    pool = LocalRolloutPool(CARTPOLE, SPEC, seed=9, workers=2, envs_per_worker=2)
    pool.sample(weights, num_steps=200)
    state = pool.state_dict()
    uninterrupted = pool.sample(weights, num_steps=200)
    pool.close()
    continued = []
    for _ in range(2):  # two restores of one checkpoint sample the same batch
        restored = LocalRolloutPool(CARTPOLE, SPEC, seed=9, workers=2, envs_per_worker=2)
        restored.load_state_dict(state)
        continued.append(restored.sample(weights, num_steps=200))
        restored.close()
    for key in ("obs", "actions", "rewards", "ends"):
        np.testing.assert_array_equal(continued[0][key], continued[1][key])
    # reseeded from (job seed, iteration): not the uninterrupted path, which kept its envs
    assert not np.array_equal(continued[0]["obs"], uninterrupted["obs"])


def test_the_actor_samples_and_scores_as_the_dense_policy():
    frames = np.zeros((6, 80, 80), np.int8)
    frames[:3, 10:14, 20] = 1  # a few pixels per frame, as in Pong's difference frames
    frames[1:4, 50, 30:35] = -1  # frames[5] stays all zero
    heads = (("bernoulli", "relu", gym.spaces.Discrete(2)), ("categorical", "tanh", gym.spaces.Discrete(3)))
    for head, activation, action_space in heads:
        torch.manual_seed(0)
        policy = Policy(PolicySpec(hidden=(200, 16), head=head, activation=activation),
                        gym.spaces.Box(-1, 1, (80, 80), np.int8), action_space)
        # a larger output layer than the near-uniform start, so the actions depend on the frames
        torch.nn.init.normal_(policy.net[1][-1].weight, std=10.0)
        torch.nn.init.constant_(policy.net[1][-1].bias, 0.3)
        with torch.no_grad():
            dense = policy.distribution(torch.as_tensor(frames))
            expected = dense.sample(torch.Generator().manual_seed(3))
            expected_logp = dense.log_prob(expected).numpy()
            mode = dense.mode().numpy()
        actor = Actor(policy)
        assert actor.sparse
        actions, logp = actor.act(frames, torch.Generator().manual_seed(3))
        np.testing.assert_array_equal(actions, expected.numpy())
        np.testing.assert_allclose(logp, expected_logp, rtol=1e-5, atol=1e-6)
        assert logp.dtype == np.float32
        greedy, _ = actor.act(frames, torch.Generator(), greedy=True)
        np.testing.assert_array_equal(greedy, mode)
        assert len(set(greedy.tolist())) > 1  # the frames lead to different actions
