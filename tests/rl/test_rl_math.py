"""The shared RL math (common.py) and the policy heads, checked against hand computations
and torch.distributions."""

import numpy as np
import pytest
import torch
import gymnasium as gym

from runyard.workloads.rl.common import (
    discounted_returns, flat_params, generalized_advantages, next_state_values, set_flat_params, standardize,
)
from runyard.workloads.rl.pg import baseline_targets
from runyard.workloads.rl.policies import Policy, PolicySpec, RunningNormalizer
from runyard.workloads.rl.trpo import conjugate_gradient


def test_discounted_returns_restart_at_segment_ends_and_bootstrap():
    rewards = np.array([1.0, 1.0, 1.0, 2.0, 3.0])
    ends = np.array([False, False, True, False, True])
    g = 0.5
    out = discounted_returns(rewards, ends, g)
    np.testing.assert_allclose(out, [1 + g * (1 + g), 1 + g, 1, 2 + g * 3, 3])
    bootstrap = np.array([0, 0, 0, 0, 10.0])  # the second segment was cut: continues in V = 10
    out = discounted_returns(rewards, ends, g, bootstrap=bootstrap)
    np.testing.assert_allclose(out[3:], [2 + g * (3 + g * 10), 3 + g * 10])


def test_discounted_returns_reset_at_each_point_like_pong():
    rewards = np.array([0.0, 0.0, -1.0, 0.0, 1.0])
    ends = np.array([False, False, False, False, True])
    out = discounted_returns(rewards, ends, 0.5, reset_at_nonzero_reward=True)
    # the point at t=4 does not leak into the rally that ended at t=2
    np.testing.assert_allclose(out, [-0.25, -0.5, -1.0, 0.5, 1.0])
    no_reset = discounted_returns(rewards, ends, 0.5)
    assert no_reset[2] == pytest.approx(-1 + 0.5 * 0.5)


def test_gae_limits_match_td_error_and_monte_carlo():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=7)
    values = rng.normal(size=7)
    ends = np.array([0, 0, 1, 0, 0, 0, 1], dtype=bool)
    terminated = ends.copy()
    next_values = next_state_values(values, np.zeros(2), ends, terminated)
    gamma = 0.9
    td = rewards + gamma * next_values - values
    np.testing.assert_allclose(generalized_advantages(rewards, values, next_values, ends, gamma, 0.0), td)
    # λ = 1: Â_t = G_t − V(s_t)  (GAE eq. 18)
    np.testing.assert_allclose(
        generalized_advantages(rewards, values, next_values, ends, gamma, 1.0),
        discounted_returns(rewards, ends, gamma) - values,
    )


def test_pg_baseline_advantages_are_gae_restarted_at_each_point():
    """Two points in one segment, γ = 0.9, λ = 0.5, written out by hand (GAE eq. 16):
    δ_t = r_t + γV(s_{t+1}) − V(s_t), with V(s_{t+1}) = 0 after a point; Â_t = δ_t + γλÂ_{t+1}
    within the point."""
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    rewards = np.array([0.0, 0.0, 1.0, 0.0, -1.0])
    ends = np.array([False, False, False, False, True])
    g, gl = 0.9, 0.45
    a2, a4 = 1 - 0.3, -1 - 0.5
    a1 = (0.9 * 0.3 - 0.2) + gl * a2
    a0 = (0.9 * 0.2 - 0.1) + gl * a1
    a3 = (0.9 * 0.5 - 0.4) + gl * a4
    for terminated in (ends, np.zeros(5, bool)):  # the episode ended, or the batch cut it at the point
        batch = {"rewards": rewards, "ends": ends, "terminated": terminated}
        returns, advantages = baseline_targets(batch, values, np.array([7.0]), g, 0.5, reset_at_point=True)
        np.testing.assert_allclose(advantages, [a0, a1, a2, a3, a4])
        np.testing.assert_allclose(returns, [g * g, g, 1, -g, -1])
    # cut mid-rally: the rest continues in V(final obs) = 2
    batch = {"rewards": np.array([0.0, 0.0, 1.0, 0.0, 0.0]), "ends": ends, "terminated": np.zeros(5, bool)}
    returns, advantages = baseline_targets(batch, values, np.array([2.0]), g, 0.5, reset_at_point=True)
    a4 = 0.9 * 2 - 0.5
    np.testing.assert_allclose(advantages[3:], [(0.9 * 0.5 - 0.4) + gl * a4, a4])
    np.testing.assert_allclose(returns[3:], [g * g * 2, g * 2])
    # λ = 1 without point resets: G_t − V(s_t), the baseline path as it was
    returns, advantages = baseline_targets({**batch, "terminated": ends}, values, np.array([2.0]), g, 1.0, False)
    np.testing.assert_allclose(advantages, returns - values)


def test_next_state_values_bootstraps_only_cut_segments():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    ends = np.array([False, True, False, True])
    terminated = np.array([False, True, False, False])
    out = next_state_values(values, np.array([9.0, 7.0]), ends, terminated)
    np.testing.assert_allclose(out, [2.0, 0.0, 4.0, 7.0])


def test_standardize():
    x = standardize(np.array([1.0, 2.0, 3.0, 10.0]))
    assert x.mean() == pytest.approx(0) and x.std() == pytest.approx(1, rel=1e-6)


def test_flat_params_roundtrip():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    theta = torch.arange(sum(p.numel() for p in net.parameters()), dtype=torch.float32)
    set_flat_params(net, theta)
    assert torch.equal(flat_params(net), theta)
    assert torch.equal(net[0].weight.reshape(-1), theta[:12])
    with pytest.raises(ValueError):
        set_flat_params(net, theta[:-1])


def test_conjugate_gradient_solves_an_spd_system():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(20, 20))
    a = torch.as_tensor(m @ m.T + 20 * np.eye(20))
    b = torch.as_tensor(rng.normal(size=20))
    x = conjugate_gradient(lambda v: a @ v, b, iters=20)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def _obs(n, shape, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, *shape)), dtype=torch.float32)


@pytest.mark.parametrize(
    "head, action_space, reference",
    [
        ("bernoulli", gym.spaces.Discrete(2), lambda out, pol: torch.distributions.Bernoulli(logits=out.squeeze(-1))),
        ("categorical", gym.spaces.Discrete(5), lambda out, pol: torch.distributions.Categorical(logits=out)),
        (
            "gaussian", gym.spaces.Box(-1, 1, (3,)),
            lambda out, pol: torch.distributions.Independent(
                torch.distributions.Normal(out, pol.log_std.exp()), 1),
        ),
    ],
)
def test_heads_match_torch_distributions(head, action_space, reference):
    obs_space = gym.spaces.Box(-np.inf, np.inf, (6,))
    policy = Policy(PolicySpec(head=head, hidden=(8,)), obs_space, action_space)
    other = Policy(PolicySpec(head=head, hidden=(8,)), obs_space, action_space)
    with torch.no_grad():  # make the heads far from uniform so the comparison means something
        for p in list(policy.parameters()) + list(other.parameters()):
            p.add_(torch.randn_like(p))
    obs = _obs(32, (6,))
    dist, dist_other = policy.distribution(obs), other.distribution(obs)
    ref = reference(policy.net(obs), policy)
    ref_other = reference(other.net(obs), other)
    actions = dist.sample(torch.Generator().manual_seed(0))
    torch.testing.assert_close(dist.log_prob(actions), ref.log_prob(actions.float() if head != "categorical" else actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    torch.testing.assert_close(dist.kl(dist_other), torch.distributions.kl_divergence(ref, ref_other))


def test_sampling_follows_the_distribution():
    policy = Policy(PolicySpec(head="bernoulli", hidden=()), gym.spaces.Box(-1, 1, (2,)), gym.spaces.Discrete(2))
    with torch.no_grad():
        policy.net[1][0].bias.fill_(1.0)  # p(UP) = σ(1) ≈ 0.731 for a zero observation
        policy.net[1][0].weight.zero_()
    dist = policy.distribution(torch.zeros(20000, 2))
    rate = dist.sample(torch.Generator().manual_seed(0)).float().mean().item()
    assert rate == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=0.01)


def test_running_normalizer_matches_numpy_and_is_in_the_state_dict():
    norm = RunningNormalizer((3,), enabled=True)
    rng = np.random.default_rng(0)
    chunks = [rng.normal(loc=5, scale=3, size=(n, 3)) for n in (10, 200, 37)]
    for chunk in chunks:
        norm.update(chunk)
    everything = np.concatenate(chunks)
    np.testing.assert_allclose(norm.mean.numpy(), everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.var.numpy(), everything.var(0), rtol=1e-4)
    z = norm(torch.as_tensor(everything)).numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    policy = Policy(PolicySpec(normalize_obs=True), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    policy.obs_norm.load_state_dict(norm.state_dict())
    fresh = Policy(PolicySpec(normalize_obs=True), gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    fresh.load_state_dict(policy.state_dict())
    assert torch.equal(fresh.obs_norm.mean, norm.mean) and torch.equal(fresh.obs_norm.count, norm.count)


def test_conv_policy_on_frames():
    policy = Policy(PolicySpec(torso="conv", hidden=(64,), head="bernoulli"),
                    gym.spaces.Box(-1, 1, (80, 80), np.int8), gym.spaces.Discrete(2))
    frames = torch.randint(-1, 2, (5, 80, 80), dtype=torch.int8)
    dist = policy.distribution(frames)
    assert dist.logits.shape == (5,)
