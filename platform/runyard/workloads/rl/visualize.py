"""End-of-trial pictures for the RL workloads: the learning curve, and for Pong the seed's
two figures: first-layer weights as 80x80 images and a game it plays (one it wins, when it
can) as a GIF."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Game:
    """One game the policy played for the GIF: its points and the opponent's."""

    points: int
    opponent_points: int
    over: bool  # the game ended (not cut short by the episode's step limit)
    tries: int  # games played to find it
    frames: int  # in the GIF

    @property
    def won(self) -> bool:
        return self.over and self.points > self.opponent_points

    def describe(self) -> str:
        outcome = ("won" if self.won else "lost") if self.over else "was cut short at"
        return (f"the policy {outcome} {self.points}-{self.opponent_points} "
                f"(game {self.tries} played; {self.frames} frames, every other step)")


@torch.no_grad()
def game_gif(make: Callable[[], gym.Env], policy: torch.nn.Module, path: Path, seed: int = 0,
             tries: int = 8, every: int = 2) -> Game:
    """Play whole games as the policy plays in training (sampling its actions), up to
    `tries`, until it wins one, and keep that game as a GIF (every `every`-th frame); if it
    wins none, the game it came closest in. A point scored is a reward of +1, one lost -1."""
    generator = torch.Generator().manual_seed(seed)
    best: tuple[int, list[Image.Image], Game] | None = None
    env = make()
    try:
        for game in range(1, tries + 1):
            frames: list[Image.Image] = []
            points = opponent_points = 0
            obs, _ = env.reset(seed=seed + game)
            for t in itertools.count():
                if t % every == 0 and getattr(env, "frame", None) is not None:
                    # Pong has a handful of colours: a palette image is a fifth of the RGB one.
                    frames.append(Image.fromarray(env.frame).quantize(colors=16))
                action = policy.distribution(torch.as_tensor(obs[None])).sample(generator)[0].item()
                obs, reward, terminated, truncated, _ = env.step(action)
                points += reward > 0
                opponent_points += reward < 0
                if terminated or truncated:
                    break
            record = Game(int(points), int(opponent_points), terminated, game, len(frames))
            if best is None or points - opponent_points > best[0]:
                best = (points - opponent_points, frames, record)
            if record.won:
                break
    finally:
        env.close()
    _, frames, record = best
    if frames:
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return record
