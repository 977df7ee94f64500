"""Pong from pixels on the real ALE: the seed's preprocessing, the same observations from
ale-py's vector env as from gymnasium's Pong-v5, batches cut at point boundaries, and a short
end-to-end run."""

import gymnasium as gym
import numpy as np
import pytest

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext
from runyard.workloads.blocks import EnvSpec
from runyard.workloads.rl.atari import (AtariVectorEnvs, PongFromPixels, preprocess_frame, preprocess_frames,
                                        register_ale, vector_settings)
from runyard.workloads.rl.policies import Policy, PolicySpec, weights_of
from runyard.workloads.rl.rollout import RolloutWorker

PONG = EnvSpec(id="ALE/Pong-v5", preprocess="pong")


def seed_prepro(I):
    """The seed's prepro, written out step by step on a copy of the frame."""
    I = I[35:195].copy()  # crop
    I = I[::2, ::2, 0]  # downsample by factor of 2
    I[I == 144] = 0  # erase background (background type 1)
    I[I == 109] = 0  # erase background (background type 2)
    I[I != 0] = 1  # everything else (paddles, ball) just set to 1
    return I.astype(np.float64)


@pytest.fixture(scope="module")
def pong_frames():
    register_ale()
    env = gym.make("ALE/Pong-v5", repeat_action_probability=0.0)
    frame, _ = env.reset(seed=0)
    frames = [frame]
    for t in range(80):  # long enough for the ball to be served and the paddles to move
        frame, *_ = env.step(2 if t % 10 < 5 else 3)
        frames.append(frame)
    env.close()
    return frames


def test_preprocessing_matches_the_seed(pong_frames):
    for frame in pong_frames[::10]:
        assert frame.shape == (210, 160, 3)
        ours = preprocess_frame(frame)
        assert ours.shape == (80, 80)
        np.testing.assert_array_equal(ours, seed_prepro(frame))
    # the field has paddles (and later a ball) on it, not an all-zero image
    late = preprocess_frame(pong_frames[-1])
    assert 20 < late.sum() < 400
    assert set(np.unique(late)) == {0, 1}


def test_observations_are_frame_differences(pong_frames):
    register_ale()
    env = PongFromPixels(gym.make("ALE/Pong-v5", repeat_action_probability=0.0))
    first, _ = env.reset(seed=0)
    np.testing.assert_array_equal(first, seed_prepro(pong_frames[0]))  # minus an all-zero previous frame
    for t in range(80):
        obs, *_ = env.step(1 if t % 10 < 5 else 0)  # 1 = UP (ALE 2), 0 = DOWN (ALE 3)
        expected = seed_prepro(pong_frames[t + 1]) - seed_prepro(pong_frames[t])
        np.testing.assert_array_equal(obs, expected)
    assert obs.dtype == np.int8 and env.action_space.n == 2
    env.close()


def test_batched_preprocessing_equals_the_per_frame_function(pong_frames):
    frames = np.stack(pong_frames)
    np.testing.assert_array_equal(preprocess_frames(frames), np.stack([preprocess_frame(f) for f in pong_frames]))


def test_the_vector_env_has_pong_v5s_dynamics():
    settings = vector_settings(PONG)
    assert settings["frameskip"] == 4 and settings["repeat_action_probability"] == 0.25
    assert settings["noop_max"] == 0 and not settings["use_fire_reset"] and not settings["reward_clipping"]
    assert not settings["maxpool"] and settings["stack_num"] == 1 and not settings["grayscale"]
    assert settings["max_num_frames_per_episode"] == 108000
    assert vector_settings(EnvSpec(id="ALE/Pong-v5", kwargs={"obs_type": "grayscale"})) is None


def test_vector_env_observations_equal_the_gymnasium_wrappers():
    """Same actions, no sticky actions (so both are deterministic): frame for frame the same
    difference frames, rewards and ends, through a whole game and the reset after it."""
    spec = PONG.model_copy(update={"kwargs": {"repeat_action_probability": 0.0}})
    register_ale()
    reference = PongFromPixels(gym.make("ALE/Pong-v5", repeat_action_probability=0.0))
    vector = AtariVectorEnvs(vector_settings(spec), num_envs=2, threads=1, pong=True)
    expected, _ = reference.reset(seed=0)
    obs = vector.reset([11, 12])
    np.testing.assert_array_equal(obs[0], expected)
    games, previous = 0, expected
    for t in range(3000):
        action = 1 if t % 14 < 7 else 0
        want, reward, terminated, truncated, _ = reference.step(action)
        obs, rewards, terms, truncs, final_obs, stepped = vector.step(np.array([action, action]), None)
        assert stepped.all() and rewards[0] == reward and terms[0] == terminated and truncs[0] == truncated
        if terminated:
            games += 1
            # ale-py reports the frame before the last step as the final one: the last
            # observation acted on stands in for it (see AtariVectorEnvs.step)
            np.testing.assert_array_equal(final_obs[0], previous)
            want, _ = reference.reset(seed=0)
        previous = want
        np.testing.assert_array_equal(obs[0], want, err_msg=f"step {t}")
        np.testing.assert_array_equal(obs[1], obs[0])
        if games and t % 14 == 0:
            break
    assert games == 1
    vector.close()
    reference.close()


def test_step_batches_stop_at_the_first_point_after_each_envs_share():
    spec = PolicySpec(hidden=(8,), head="bernoulli")
    worker = RolloutWorker(PONG, spec, envs_per_worker=2, seed=0)
    policy = Policy(spec, worker.envs.single_observation_space, worker.envs.single_action_space)
    batch = worker.run(weights_of(policy), num_steps=60, until_point=True)
    worker.close()
    ends = np.flatnonzero(batch["ends"])
    assert len(ends) == 2 and len(batch["rewards"]) > 60  # a point takes longer than 30 steps
    assert np.all(batch["rewards"][ends] != 0)  # each env's segment ends at a point
    assert np.count_nonzero(batch["rewards"]) == 2  # ... its first point after its share
    assert batch["env_steps"] >= len(batch["rewards"])


@pytest.mark.slow
def test_short_pong_run_with_artifacts(tmp_path):
    cls = get("rl.pg")
    config = cls.Config(
        policy={"hidden": (200,), "head": "bernoulli", "activation": "relu"},
        optimizer="rmsprop", lr=1e-3, batch_episodes=2, reset_returns_at_reward=True,
    )
    context = WorkloadContext(
        seed=0, env={"id": "ALE/Pong-v5", "max_episode_steps": 150},
        rollout={"workers": 1, "envs_per_worker": 2}, workdir=tmp_path,
    )
    assert cls.check_spec(config, context) == []
    pong = cls()
    pong.setup(config, context)
    before = pong.policy.net[1][0].weight.detach().clone()
    metrics = [pong.step() for _ in range(2)]
    assert not pong.policy.net[1][0].weight.detach().equal(before)
    assert all(m["episode_len_mean"] == 150 for m in metrics)
    pong.artifacts(tmp_path)
    pong.close()
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "first_layer_weights.png").stat().st_size > 1000
    from PIL import Image

    gif = Image.open(tmp_path / "game.gif")
    assert gif.n_frames > 10 and gif.size == (160, 210)
    # 150 steps a game: no side scores 21, so it keeps the closest of its tries.
    assert (tmp_path / "game.txt").read_text().startswith("the policy was cut short at ")
