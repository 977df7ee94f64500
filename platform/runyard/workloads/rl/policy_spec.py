"""What a policy is, as plain data: the `config.policy` block and the head it means for an
env's action space. A module of its own, importing no torch, so that `runyard validate`
checks an RL spec without it; policies.py builds the networks."""

from __future__ import annotations

from typing import Literal

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field

TorsoKind = Literal["mlp", "conv"]
HeadKind = Literal["auto", "bernoulli", "categorical", "gaussian"]


class PolicySpec(BaseModel):
    """The `config.policy` block; a plain, picklable description rollout workers rebuild from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    torso: TorsoKind = "mlp"
    hidden: tuple[int, ...] = Field((64, 64), description="MLP hidden sizes; () is a linear policy")
    activation: Literal["tanh", "relu"] = "tanh"
    head: HeadKind = Field("auto", description="auto: categorical for Discrete, gaussian for Box")
    normalize_obs: bool = Field(False, description="running mean/std observation normalization")
    init_log_std: float = Field(-0.5, description="gaussian head: initial log σ")


def resolve_head(spec: PolicySpec, action_space: gym.Space) -> str:
    """The head a spec means for this action space, or ValueError saying what fits."""
    if isinstance(action_space, gym.spaces.Discrete):
        head = "categorical" if spec.head == "auto" else spec.head
        if head == "gaussian":
            raise ValueError("a gaussian head needs a Box action space; use categorical or bernoulli")
        if head == "bernoulli" and action_space.n != 2:
            raise ValueError(f"a bernoulli head needs 2 actions, the env has {action_space.n}")
        return head
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        head = "gaussian" if spec.head == "auto" else spec.head
        if head != "gaussian":
            raise ValueError(f"a {head} head needs a Discrete action space; use gaussian")
        return head
    raise ValueError(f"unsupported action space {action_space}")
