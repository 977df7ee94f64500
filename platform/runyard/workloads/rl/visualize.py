"""End-of-trial pictures for the RL workloads: the learning curve, and for Pong the seed's
two figures: first-layer weights as 80x80 images and a greedy episode as a GIF."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def learning_curve(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """Mean (and min-max band of) episode return against env steps."""
    rows = [h for h in history if "episode_return_mean" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    if rows:
        steps = [h["env_steps_total"] for h in rows]
        ax.plot(steps, [h["episode_return_mean"] for h in rows], label="mean return")
        ax.fill_between(
            steps, [h["episode_return_min"] for h in rows], [h["episode_return_max"] for h in rows],
            alpha=0.2, label="min-max",
        )
        ax.legend(loc="lower right")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def first_layer_weights(policy: torch.nn.Module, path: Path, max_units: int = 64) -> None:
    """Each hidden unit's input weights reshaped to the 80x80 frame (blue negative, red positive)."""
    first = next(m for m in policy.net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    weights = first.weight.detach().numpy()
    if isinstance(first, torch.nn.Conv2d):  # a conv torso: its filters (first input channel)
        units = weights[:max_units, 0]
    else:
        units = weights[:max_units].reshape(-1, 80, 80)
    cols = math.ceil(math.sqrt(len(units)))
    rows = math.ceil(len(units) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, unit in zip(axes.flat, units):
        bound = np.abs(unit).max() or 1.0
        ax.imshow(unit, cmap="bwr", vmin=-bound, vmax=bound)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@torch.no_grad()
def greedy_episode_gif(
    make: Callable[[], gym.Env], policy: torch.nn.Module, path: Path, seed: int = 0,
    max_frames: int = 400, every: int = 2,
) -> None:
    """Play one episode with the most likely action at every step; keep every `every`-th raw frame."""
    env = make()
    frames = []
    try:
        obs, _ = env.reset(seed=seed)
        for t in range(max_frames):
            if t % every == 0 and getattr(env, "frame", None) is not None:
                frames.append(Image.fromarray(env.frame))
            action = policy.distribution(torch.as_tensor(obs[None])).mode()[0].item()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
    finally:
        env.close()
    if frames:
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
