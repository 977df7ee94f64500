"""Atari Pong from pixels, preprocessed as in "Deep Reinforcement Learning: Pong from Pixels".

Each 210x160x3 frame is cropped to the playing field (rows 35..194), downsampled by 2 to
80x80 (one colour channel), the two background colours are erased and everything else set
to 1. The policy sees the difference of two consecutive such frames, so it can tell motion.
Two actions: UP and DOWN (the policy's action 1 is UP, as the seed's "y = 1 if UP").
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

# Pong's background colours in the red channel (the seed's "erase background (type 1/2)").
BACKGROUND_RED = (144, 109)
# ALE's Pong action set: 0 NOOP, 1 FIRE, 2 RIGHT (= paddle up), 3 LEFT (= paddle down).
ALE_UP, ALE_DOWN = 2, 3


def register_ale() -> None:
    """Make the ALE/... env ids known to gymnasium (idempotent)."""
    import ale_py

    # ALE prints its banner to stderr for every emulator it creates (`runyard validate` of a
    # Pong spec builds one to read its spaces); keep its warnings and errors only.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


def preprocess_frame(frame: np.ndarray) -> np.ndarray:
    """210x160x3 uint8 frame -> 80x80 int8 of {0, 1}: crop, downsample, erase background, binarize."""
    field = frame[35:195:2, ::2, 0]
    binary = (field != 0) & (field != BACKGROUND_RED[0]) & (field != BACKGROUND_RED[1])
    return binary.astype(np.int8)


class PongFromPixels(gym.Wrapper):
    """Observations: difference of consecutive preprocessed frames (int8 in {-1, 0, 1}, 80x80).
    Actions: Discrete(2), 1 = UP, 0 = DOWN."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-1, 1, (80, 80), np.int8)
        self.action_space = gym.spaces.Discrete(2)
        self._previous: np.ndarray | None = None
        self.frame: np.ndarray | None = None  # the last raw RGB frame, for GIFs

    def _difference(self, frame: np.ndarray) -> np.ndarray:
        self.frame = frame
        current = preprocess_frame(frame)
        previous = np.zeros_like(current) if self._previous is None else self._previous
        self._previous = current
        return current - previous

    def reset(self, **kwargs):
        frame, info = self.env.reset(**kwargs)
        self._previous = None
        return self._difference(frame), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(ALE_UP if int(action) == 1 else ALE_DOWN)
        return self._difference(frame), reward, terminated, truncated, info
