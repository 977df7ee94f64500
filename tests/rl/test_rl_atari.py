"""Pong from pixels on the real ALE: the seed's preprocessing, and a short end-to-end run."""

import gymnasium as gym
import numpy as np
import pytest

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext
from runyard.workloads.rl.atari import PongFromPixels, preprocess_frame, register_ale


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

    gif = Image.open(tmp_path / "greedy_episode.gif")
    assert gif.n_frames > 10 and gif.size == (160, 210)
