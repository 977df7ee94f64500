"""The RL job specs in jobs/ are valid: the spec parser checks each against its workload
(config schema, env id and action space, rollout, stop metrics, every sweep dimension)."""

from pathlib import Path

import pytest

from runyard.spec import load_spec

JOBS = Path(__file__).resolve().parents[2] / "jobs"
RL_JOBS = [
    "cartpole_pg.yaml", "cartpole_trpo.yaml", "cartpole_cem.yaml", "pong_pg.yaml", "pong_trpo.yaml",
    "hopper_trpo.yaml", "cartpole_ppo_rllib.yaml", "cartpole_pg_sweep.yaml", "pong_pg_sweep.yaml",
    "cartpole_pg_pbt.yaml",
]


@pytest.mark.parametrize("filename", RL_JOBS)
def test_job_spec_is_valid_for_its_workload(filename):
    spec = load_spec(JOBS / filename)
    assert spec.workload.startswith(("rl.", "rllib."))
    assert spec.env is not None


def test_pong_jobs_use_the_seeds_preprocessing():
    for filename in ("pong_pg.yaml", "pong_trpo.yaml"):
        assert load_spec(JOBS / filename).env.preprocess == "pong"
