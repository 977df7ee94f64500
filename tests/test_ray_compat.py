"""The private Ray APIs runyard leans on (runyard.ray_compat) still exist in the
installed Ray. Fast, and loud on an upgrade: each failure names what moved."""

from __future__ import annotations

import json
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
