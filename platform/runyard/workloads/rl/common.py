"""Math shared by the RL algorithms: discounting, GAE, standardization, flat parameter vectors.

Every algorithm file imports these instead of keeping its own copy, so a fix lands everywhere.
Arrays follow the rollout batch layout (see rollout.py): transitions of one trajectory segment
are contiguous, and `ends[t]` marks the last transition of a segment.
"""

from __future__ import annotations

import numpy as np

from runyard.workloads.lazy import lazy_module

torch = lazy_module("torch")  # imported on first use: validating a spec needs no torch


def discounted_returns(
    rewards: np.ndarray,
    ends: np.ndarray,
    gamma: float,
    bootstrap: np.ndarray | None = None,
    reset_at_nonzero_reward: bool = False,
) -> np.ndarray:
    """R_t = r_t + γ R_{t+1}, restarting at every segment end (Williams 1992's return-to-go).

    bootstrap: per-transition value added at a segment end that was cut rather than terminated
        (γ V(s_{T+1})); zeros elsewhere. None means no bootstrapping.
    reset_at_nonzero_reward: Pong-from-pixels' trick: a point ends the "game" that earned it,
        so the running return restarts after each nonzero reward, and a segment cut right at a
        point bootstraps nothing into it.
    """
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(rewards))):
        if reset_at_nonzero_reward and rewards[t] != 0:
            running = 0.0
        elif ends[t]:
            running = 0.0 if bootstrap is None else float(bootstrap[t])
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def generalized_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    ends: np.ndarray,
    gamma: float,
    lam: float,
    reset_at_nonzero_reward: bool = False,
) -> np.ndarray:
    """GAE(γ, λ), Schulman et al. 2016 eq. 16: Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γV(s_{t+1}) − V(s_t).

    next_values[t] is V(s_{t+1}) inside a segment, V(final obs) where a segment was cut
    (truncated or end of the batch), and 0 where the episode terminated.
    reset_at_nonzero_reward: every point is an episode of its own (Pong, as discounted_returns
        does): a nonzero r_t ends it, so δ_t = r_t − V(s_t) and the sum stops there.
    """
    if reset_at_nonzero_reward:
        next_values = np.where(rewards != 0, 0.0, next_values)
    deltas = rewards + gamma * next_values - values
    advantages = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in reversed(range(len(rewards))):
        if ends[t] or (reset_at_nonzero_reward and rewards[t] != 0):
            running = 0.0
        running = deltas[t] + gamma * lam * running
        advantages[t] = running
    return advantages


def standardize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(x − mean) / std over the batch: the variance-reduction step of the Pong seed."""
    return (x - x.mean()) / (x.std() + eps)


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    """All trainable parameters of `module` as one vector (TRPO's θ, CEM's search space)."""
    return torch.cat([p.data.reshape(-1) for p in module.parameters()])


def set_flat_params(module: torch.nn.Module, flat: torch.Tensor) -> None:
    """Inverse of flat_params: write the vector back, parameter by parameter, in order."""
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    if total != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, the module {total}")
    offset = 0
    for p in params:
        p.data.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def flat_grad(output: torch.Tensor, module: torch.nn.Module, **kwargs) -> torch.Tensor:
    """∂output/∂θ as one vector, in flat_params order."""
    grads = torch.autograd.grad(output, list(module.parameters()), **kwargs)
    return torch.cat([g.reshape(-1) for g in grads])


def next_state_values(
    values: np.ndarray, final_values: np.ndarray, ends: np.ndarray, terminated: np.ndarray
) -> np.ndarray:
    """V(s_{t+1}) for every transition of a batch laid out as in rollout.py.

    Inside a segment it is the next row's value; at a segment end it is V(final obs) when the
    segment was cut (time limit, end of batch) and 0 when the episode terminated.
    """
    next_values = np.zeros_like(values)
    next_values[:-1] = values[1:]
    end_rows = np.flatnonzero(ends)
    next_values[end_rows] = np.where(terminated[end_rows], 0.0, final_values)
    return next_values
