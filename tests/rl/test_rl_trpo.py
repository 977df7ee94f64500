"""TRPO's trust region: every update stays within max_kl, measured independently with
torch.distributions on the batch the update used."""

import copy

import numpy as np
import pytest
import torch

from runyard.workloads import get
from runyard.workloads.base import WorkloadContext


@pytest.mark.parametrize("env, max_kl", [({"id": "CartPole-v1"}, 0.01), ({"id": "Pendulum-v1"}, 0.002)])
def test_measured_kl_stays_within_the_constraint(env, max_kl):
    cls = get("rl.trpo")
    trpo = cls()
    trpo.setup(cls.Config(steps_per_iter=1000, value_iters=10, max_kl=max_kl),
               WorkloadContext(seed=0, env=env, rollout={"workers": 1, "envs_per_worker": 2}))
    moved = 0
    for _ in range(4):
        batch = trpo.pool.sample(trpo.weights(), num_steps=trpo.config.steps_per_iter)
        before = copy.deepcopy(trpo.policy)
        result = trpo.update(batch)
        obs, actions = torch.as_tensor(batch["obs"]), torch.as_tensor(batch["actions"])
        with torch.no_grad():
            old, new = before.net(before.obs_norm(obs)), trpo.policy.net(trpo.policy.obs_norm(obs))
            if env["id"] == "CartPole-v1":
                p, q = torch.distributions.Categorical(logits=old), torch.distributions.Categorical(logits=new)
            else:
                p = torch.distributions.Independent(torch.distributions.Normal(old, before.log_std.exp()), 1)
                q = torch.distributions.Independent(torch.distributions.Normal(new, trpo.policy.log_std.exp()), 1)
            kl = torch.distributions.kl_divergence(p, q).mean().item()
            gain = (torch.exp(q.log_prob(actions) - p.log_prob(actions))).mean()
        assert kl <= max_kl * (1 + 1e-5)
        assert kl == pytest.approx(result["kl"], rel=1e-3, abs=1e-7)
        if result["kl"] > 0:
            moved += 1
            assert result["surrogate_gain"] > 0
            assert 1 <= result["line_search_steps"] <= trpo.config.backtrack_iters
        assert np.isfinite(gain.item())
    trpo.close()
    assert moved >= 3  # the updates do move the policy, up to the trust region's edge
