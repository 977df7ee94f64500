"""Policies and value functions: a torso (MLP or small ConvNet) and a head that turns its
features into an action distribution.

Heads, each with the log-probability, entropy and KL written out (tests compare them with
torch.distributions):
  bernoulli:   two actions, p = σ(logit)            (Pong from pixels: UP with probability p)
  categorical: n actions, π = softmax(logits)
  gaussian:    diagonal Gaussian, mean from the net, state-independent log std (continuous)

Running observation normalization (for MuJoCo) lives inside the policy as buffers, so it
travels with the weights to rollout workers and is saved in every checkpoint.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from runyard.workloads.rl.policy_spec import PolicySpec, resolve_head

__all__ = ["Actor", "Policy", "PolicySpec", "RunningNormalizer", "ValueFunction", "load_weights",
           "resolve_head", "weights_of"]


# ---------------------------------------------------------------- action distributions


class Bernoulli:
    """Two actions; action 1 with probability p = σ(l)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        # log p(a) = a·log σ(l) + (1 − a)·log σ(−l)
        a = actions.float()
        return a * F.logsigmoid(self.logits) + (1 - a) * F.logsigmoid(-self.logits)

    def entropy(self) -> torch.Tensor:
        p = torch.sigmoid(self.logits)
        return -(p * F.logsigmoid(self.logits) + (1 - p) * F.logsigmoid(-self.logits))

    def kl(self, other: "Bernoulli") -> torch.Tensor:
        p = torch.sigmoid(self.logits)
        return p * (F.logsigmoid(self.logits) - F.logsigmoid(other.logits)) + (1 - p) * (
            F.logsigmoid(-self.logits) - F.logsigmoid(-other.logits)
        )

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(self.logits.shape, generator=generator)
        return (u < torch.sigmoid(self.logits)).long()

    def mode(self) -> torch.Tensor:
        return (self.logits > 0).long()

    def detached(self) -> "Bernoulli":
        return Bernoulli(self.logits.detach().clone())


class Categorical:
    """n actions; π(a) = softmax(l)_a."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.log_pi = F.log_softmax(logits, dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_pi.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_pi.exp() * self.log_pi).sum(-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        return (self.log_pi.exp() * (self.log_pi - other.log_pi)).sum(-1)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.log_pi.exp(), 1, generator=generator).squeeze(-1)

    def mode(self) -> torch.Tensor:
        return self.log_pi.argmax(-1)

    def detached(self) -> "Categorical":
        return Categorical(self.logits.detach().clone())


class DiagGaussian:
    """a ~ N(μ, diag σ²); log-prob and entropy summed over action dimensions."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean, self.log_std = mean, log_std.expand_as(mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        # log N(a; μ, σ²) = −½((a − μ)/σ)² − log σ − ½ log 2π, per dimension
        z = (actions - self.mean) / self.log_std.exp()
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)

    def kl(self, other: "DiagGaussian") -> torch.Tensor:
        # KL(p‖q) = log σ_q/σ_p + (σ_p² + (μ_p − μ_q)²) / 2σ_q² − ½
        var_p, var_q = (2 * self.log_std).exp(), (2 * other.log_std).exp()
        return (
            other.log_std - self.log_std + (var_p + (self.mean - other.mean).pow(2)) / (2 * var_q) - 0.5
        ).sum(-1)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator)
        return self.mean + self.log_std.exp() * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def detached(self) -> "DiagGaussian":
        return DiagGaussian(self.mean.detach().clone(), self.log_std.detach().clone())


# Each distribution may hold views of the policy's parameters (the Gaussian's log σ);
# `detached()` is a frozen copy, for a π_old that must not move when θ is updated in place.
Distribution = Bernoulli | Categorical | DiagGaussian


# ---------------------------------------------------------------- observation normalization


class RunningNormalizer(nn.Module):
    """Running mean and variance of observations (Chan et al.'s parallel update), as buffers.

    normalize(x) = clip((x − mean) / sqrt(var + ε), ±clip). Updated by the learner from each
    batch after the policy update, so the batch's log-probs stay those it was sampled with.
    """

    def __init__(self, shape: tuple[int, ...], enabled: bool, clip: float = 10.0):
        super().__init__()
        self.enabled, self.clip = enabled, clip
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: np.ndarray) -> None:
        if not self.enabled:
            return
        x = torch.as_tensor(batch, dtype=torch.float64)
        n, batch_mean, batch_var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float()
        if not self.enabled:
            return obs
        z = (obs - self.mean.float()) / torch.sqrt(self.var.float() + 1e-8)
        return z.clamp(-self.clip, self.clip)


# ---------------------------------------------------------------- torsos


def _activation(name: str) -> type[nn.Module]:
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]


def mlp(sizes: list[int], activation: str, output_gain: float = 1.0) -> nn.Sequential:
    """Linear layers with `activation` between them (none after the last); orthogonal init."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        linear = nn.Linear(n_in, n_out)
        nn.init.orthogonal_(linear.weight, output_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(_activation(activation)())
    return nn.Sequential(*layers)


class ConvTorso(nn.Module):
    """A small ConvNet for 80x80 frames (one channel): two strided convolutions, then a dense layer."""

    def __init__(self, obs_shape: tuple[int, ...], hidden: int, activation: str):
        super().__init__()
        act = _activation(activation)
        channels = obs_shape[0] if len(obs_shape) == 3 else 1
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=8, stride=4), act(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2), act(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flat = self.conv(torch.zeros(1, channels, *obs_shape[-2:])).shape[1]
        self.dense = nn.Sequential(nn.Linear(n_flat, hidden), act())
        self.out_features = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() == 3:  # (batch, H, W) frames get their channel axis
            obs = obs.unsqueeze(1)
        return self.dense(self.conv(obs))


# ---------------------------------------------------------------- policy and value function


class Policy(nn.Module):
    """π(a|s): normalizer → torso → head parameters → distribution."""

    def __init__(self, spec: PolicySpec, observation_space: gym.Space, action_space: gym.Space):
        super().__init__()
        obs_shape = tuple(observation_space.shape)
        self.head_kind = resolve_head(spec, action_space)
        self.obs_norm = RunningNormalizer(obs_shape, spec.normalize_obs)
        if self.head_kind == "bernoulli":
            n_out = 1
        elif self.head_kind == "categorical":
            n_out = int(action_space.n)
        else:
            n_out = int(action_space.shape[0])
        if spec.torso == "conv":
            torso = ConvTorso(obs_shape, spec.hidden[0] if spec.hidden else 256, spec.activation)
            last = nn.Linear(torso.out_features, n_out)
            nn.init.orthogonal_(last.weight, 0.01)
            nn.init.zeros_(last.bias)
            self.net = nn.Sequential(torso, last)
        else:
            # A small output gain starts the policy near uniform (Andrychowicz et al. 2021).
            self.net = nn.Sequential(
                nn.Flatten(), mlp([int(np.prod(obs_shape)), *spec.hidden, n_out], spec.activation, 0.01)
            )
        if self.head_kind == "gaussian":
            self.log_std = nn.Parameter(torch.full((n_out,), spec.init_log_std))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        return self._head(self.net(self.obs_norm(obs)))

    def _head(self, out: torch.Tensor) -> Distribution:
        if self.head_kind == "bernoulli":
            return Bernoulli(out.squeeze(-1))
        if self.head_kind == "categorical":
            return Categorical(out)
        return DiagGaussian(out, self.log_std)


class Actor:
    """The policy as a rollout worker acts with it: act(obs, generator, greedy) -> (actions,
    log-probabilities) for a batch of numpy observations, equal to sampling from
    Policy.distribution up to float rounding. It copies the policy's weights, so build a new
    one whenever they change.

    Why not Policy.distribution: acting is a forward pass on a handful of rows per emulator
    step, and torch's per-call cost on such tiny tensors was a third of the sampler's own
    time. For an MLP on raw observations (Pong) it runs in numpy instead:
    - the first layer W x + b sums only over the inputs nonzero somewhere in the batch
      (Pong's difference frames have ~27 nonzero pixels of 6,400; the dense 200 x 6,400
      product cost about 100 us a frame on one core, near half an emulator step), gathering
      the rows of a transposed copy of W (contiguous, one row per input): 20 us per step of
      5 envs against 76 us for torch gathering W's strided columns (2026-12-07);
    - the Bernoulli head samples and scores in numpy, from the same torch generator.
    Normalized observations are dense, and a conv torso has no such sum: those take
    Policy.distribution."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.sparse = not policy.obs_norm.enabled and isinstance(policy.net[0], nn.Flatten)
        if self.sparse:
            first, *rest = policy.net[1]
            self.weight_t = first.weight.detach().numpy().T.copy()
            self.bias = first.bias.detach().numpy()
            # The layers after the first as (W^T, b) for a linear layer or the activation.
            self.rest = [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy())
                         if isinstance(layer, nn.Linear) else _NUMPY_ACTIVATIONS[type(layer)] for layer in rest]

    def _outputs(self, obs: np.ndarray) -> np.ndarray:
        x = obs.reshape(len(obs), -1)
        used = np.flatnonzero(x.any(0))
        out = x[:, used].astype(np.float32) @ self.weight_t[used] + self.bias
        for layer in self.rest:
            out = out @ layer[0] + layer[1] if isinstance(layer, tuple) else layer(out)
        return out

    @torch.no_grad()
    def act(self, obs: np.ndarray, generator: torch.Generator, greedy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not self.sparse:
            dist = self.policy.distribution(torch.as_tensor(obs))
        elif self.policy.head_kind != "bernoulli":
            dist = self.policy._head(torch.from_numpy(self._outputs(obs)))  # noqa: SLF001 (its own head)
        else:
            logits = self._outputs(obs)[:, 0]
            if greedy:
                up = logits > 0
            else:  # as Bernoulli.sample: UP when u < σ(l)
                up = torch.rand(logits.shape, generator=generator).numpy() < 1 / (1 + np.exp(-logits))
            # log p(a) = log σ(±l) = −log(1 + e^{∓l}): + for UP, − for DOWN (Bernoulli.log_prob)
            return up.astype(np.int64), -np.logaddexp(np.float32(0), np.where(up, -logits, logits))
        actions = dist.mode() if greedy else dist.sample(generator)
        return actions.numpy(), dist.log_prob(actions).numpy()


_NUMPY_ACTIVATIONS = {nn.ReLU: lambda x: np.maximum(x, 0), nn.Tanh: np.tanh}


class ValueFunction(nn.Module):
    """V(s): an MLP on the policy's normalized observations (TRPO, the PG baseline)."""

    def __init__(self, obs_norm: RunningNormalizer, obs_shape: tuple[int, ...], hidden, activation: str):
        super().__init__()
        # Held in a list so the normalizer is shared with the policy, not a second copy of
        # its buffers (the policy's state_dict owns and checkpoints them).
        self._norm = [obs_norm]
        self.net = nn.Sequential(nn.Flatten(), mlp([int(np.prod(obs_shape)), *hidden, 1], activation))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self._norm[0](obs)).squeeze(-1)


def weights_of(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state (parameters and buffers) as numpy arrays: what rollout workers receive."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_weights(module: nn.Module, weights: dict[str, np.ndarray]) -> None:
    # torch.tensor copies: arrays from Ray's object store are read-only views.
    module.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
