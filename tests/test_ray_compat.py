"""The private Ray APIs runyard leans on (runyard.ray_compat) still exist in the
installed Ray. Fast, and loud on an upgrade: each failure names what moved."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import ray
from ray import tune

from runyard import ray_compat


def test_the_installed_ray_is_the_one_the_compat_module_was_checked_with():
    assert ray.__version__.startswith(ray_compat.CHECKED_WITH_RAY + "."), (
        f"Ray {ray.__version__} is installed; runyard.ray_compat was checked with "
        f"{ray_compat.CHECKED_WITH_RAY}: re-check each function there, then update it")


def test_a_tuner_still_keeps_its_run_config_where_replace_callbacks_sets_it():
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(callbacks=[]))
    marker = tune.Callback()
    ray_compat.replace_callbacks(tuner, [marker])
    assert tuner._local_tuner.get_run_config().callbacks == [marker]


class CountedPayload(dict):
    copies = 0

    def __deepcopy__(self, memo: dict) -> dict:
        CountedPayload.copies += 1  # and its copies count too
        return CountedPayload({key: copy.deepcopy(value, memo) for key, value in self.items()})


def test_the_variant_generator_copies_a_grid_value_once_not_once_per_variant():
    """A sweep's trials reach Tune as one grid of N payloads: copying all of them for each
    variant cost a 1,000-trial sweep's driver ~30 s (see grid_values_copied_once)."""
    from ray.tune.search.variant_generator import generate_variants

    ray_compat.grid_values_copied_once()
    payloads = [CountedPayload(trial_id=f"t{i:04d}", config={"x": i / 7}) for i in range(200)]
    CountedPayload.copies = 0
    variants = [config for _, config in generate_variants({"trial": tune.grid_search(payloads)})]
    assert [v["trial"] for v in variants] == payloads  # each variant its own trial, in order
    # Two copies a payload (the generator's input, then its variant); Tune alone made 40,400.
    assert CountedPayload.copies <= 2 * len(payloads), CountedPayload.copies


def test_tune_counts_its_callbacks_for_telemetry_without_importing_mlflow():
    """Tune's usage telemetry imported Ray's MLflow integration (MLflow, pandas, scipy: ~0.7 s)
    before each run's first trial just to count the callbacks' classes."""
    probe = ("import sys\n"
             "from ray import tune\n"
             "from ray.air._internal import usage\n"
             "from runyard import ray_compat\n"
             "ray_compat.callbacks_counted_without_integrations()\n"
             "class Mine(tune.Callback): pass\n"
             "print(dict(usage._count_callbacks([Mine(), Mine()])), 'mlflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split("\n")[-2]
    assert out == "{'CustomCallback': 2} False", out


def test_experiment_state_files_are_read_as_tune_writes_them(tmp_path: Path):
    """The layout Tune 2.60 writes; a real sweep's state is read by tests/test_sweep_explain.py."""
    trial = {"config": {"trial": {"trial_id": "t0000"}}, "status": "TERMINATED"}
    runtime = {"num_failures": 1, "last_result": {}}
    (tmp_path / "experiment_state-2026-12-01_10-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps(runtime)]]}))
    assert list(ray_compat.experiment_trials(tmp_path)) == [(trial, runtime)]
    assert list(ray_compat.experiment_trials(tmp_path / "missing")) == []


def test_the_autoscaler_status_api_is_still_where_explain_reads_it():
    from ray.autoscaler.v2.sdk import get_cluster_status  # noqa: F401 — its presence is the test


def test_the_jobs_client_still_uploads_py_modules_in_a_step_of_its_own():
    import inspect

    from ray.job_submission import JobSubmissionClient

    step = getattr(JobSubmissionClient, "_upload_py_modules_if_needed", None)
    assert callable(step), "JobSubmissionClient._upload_py_modules_if_needed is gone"
    assert list(inspect.signature(step).parameters)[:2] == ["self", "runtime_env"]



def test_pbt_still_builds_a_members_config_where_runyard_keeps_the_members_identity():
    """ray_compat.population_based_training overrides PBT's private `_get_new_config` and
    reads its private `_trial_state`: called here as PBT's `_exploit` calls it."""
    import pickle

    from ray.train import Checkpoint
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.schedulers.pbt import _PBTTrialState

    scheduler = ray_compat.population_based_training(
        _keep_member, time_attr="training_iteration", metric="score", mode="max",
        perturbation_interval=2, hyperparam_mutations={"lr": [0.1, 0.2, 0.3]},
        resample_probability=0.0)
    # Tune pickles the scheduler with the Tuner, and a restored sweep unpickles it.
    scheduler = pickle.loads(pickle.dumps(scheduler))
    assert isinstance(scheduler, PopulationBasedTraining)
    member = Trial("__fake", config={"lr": 0.1, "who": "member"}, stub=True)
    donor = Trial("__fake", config={"lr": 0.2, "who": "donor"}, stub=True)
    for trial, iteration in ((member, 4), (donor, 6)):
        scheduler._trial_state[trial] = _PBTTrialState(trial)
        scheduler._trial_state[trial].last_result = {"training_iteration": iteration}
    scheduler._trial_state[donor].last_checkpoint = Checkpoint("/ckpt/donor/checkpoint_000002")
    new_config, operations = scheduler._get_new_config(member, donor)
    assert new_config["who"] == "member" and new_config["lr"] in (0.1, 0.3)
    assert new_config["facts"] == ray_compat.ExploitFacts(
        member_iteration=4, donor_config={"lr": 0.2, "who": "donor"}, donor_iteration=6,
        checkpoint="/ckpt/donor/checkpoint_000002")
    assert "lr" in operations


def _keep_member(member_config: dict, new_config: dict, facts: ray_compat.ExploitFacts) -> dict:
    return {**new_config, "who": member_config["who"], "facts": facts}
