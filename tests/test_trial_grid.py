"""A sweep's trials reach Tune as one grid of payloads. Tune's variant generator deep-copies
the whole param space for every variant it makes; the grid must not be copied with it, or a
sweep of N trials pays N² payload copies in its driver (minutes at a few thousand trials)."""

from __future__ import annotations

import copy

from ray import tune
from ray.tune.search.variant_generator import generate_variants

from runyard.execute.tune_runner import TrialGrid


def test_every_variant_gets_its_own_payload_and_the_grid_is_never_copied():
    payloads = TrialGrid({"trial_id": f"t{i:04d}", "config": {"x": i / 7}} for i in range(300))
    space = {"trial": tune.grid_search(payloads)}
    assert copy.deepcopy(space)["trial"]["grid_search"] is payloads
    variants = [config for _, config in generate_variants(space)]
    assert [v["trial"]["trial_id"] for v in variants] == [f"t{i:04d}" for i in range(300)]
    assert [v["trial"] for v in variants] == list(payloads)
