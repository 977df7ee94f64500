"""Every use of a Ray API that is not public, in one place, each checked against Ray 2.60.
A leaf below every layer (it imports nothing of runyard), so that launch and execute both
use it.

tests/test_ray_compat.py fails loudly (and fast) when an upgrade of Ray moves one of them;
change them here and nowhere else. (RLlib's algorithm registry is read by the rllib
baseline workload itself, because workloads may not import the executor; see
runyard.workloads.rl.rllib_baseline.)
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKED_WITH_RAY = "2.60"


def replace_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a restored Tuner this driver's callbacks. `Tuner.restore` brings back the
    callbacks pickled by the driver that started the experiment (whose MLflow writer is
    gone), and Tune has no public setter: the run config lives on the private
    `Tuner._local_tuner` (a TunerInternal) behind `get_run_config()`."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


def grid_values_copied_once() -> None:
    """Make Tune's variant generator stop copying a grid's values once per variant. For each
    variant, `ray.tune.search.variant_generator._grid_search_generator` deep-copies the whole
    unresolved spec, the grid's list of values included, and then overwrites that list with
    the variant's one value: a sweep of N trials (runyard hands Tune its trials as one grid of
    N payloads) paid N² payload copies in its driver's Tune loop, ~30 s at 1,000 trials and
    most of an hour at 5,000. The generator already holds the values (its `grid_vars`), so the
    spec it copies is cleared at each grid's path first; that spec is the generator's own copy
    (`_generate_variants_internal` deep-copies its input), read by nothing else. Idempotent."""
    from ray.tune.search import variant_generator

    tune_own = variant_generator._grid_search_generator
    if getattr(tune_own, "runyard_patched", False):
        return

    def values_not_copied(unresolved_spec: dict, grid_vars: list) -> Iterator[dict]:
        for path, _ in grid_vars:
            variant_generator.assign_value(unresolved_spec, path, None)
        yield from tune_own(unresolved_spec, grid_vars)

    values_not_copied.runyard_patched = True
    variant_generator._grid_search_generator = values_not_copied


def callbacks_counted_without_integrations() -> None:
    """Make Tune's usage telemetry count a run's callbacks without importing MLflow. Each
    `tune.run` tags its callbacks by class (`ray.air._internal.usage.tag_callbacks`), and
    `_count_callbacks` imports Ray's W&B, Comet and MLflow integrations to compare the classes
    with: MLflow, pandas and scipy cost a driver ~0.7 s before it asks for its first trial,
    where runyard imports MLflow only on its tracking thread, off that path. The count is
    kept as Ray makes it: by class name where a callback is one of Ray's own loggers (none of
    which runyard passes), else as a custom (logger) callback."""
    from ray.air._internal import usage

    if getattr(usage._count_callbacks, "runyard_patched", False):
        return
    counted_by_ray = usage._count_callbacks

    def count(callbacks: list[Any] | None) -> dict[str, int]:
        from ray.tune import Callback
        from ray.tune.logger import LoggerCallback

        if any(type(c).__module__.startswith("ray.") for c in callbacks or []):
            return counted_by_ray(callbacks)  # one of Ray's own: its name is the count's key
        counts: dict[str, int] = {}
        for callback in callbacks or []:
            if isinstance(callback, Callback):
                key = "CustomLoggerCallback" if isinstance(callback, LoggerCallback) else "CustomCallback"
                counts[key] = counts.get(key, 0) + 1
        return counts

    count.runyard_patched = True
    usage._count_callbacks = count


def experiment_trials(tune_path: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The trials of the newest experiment state Tune wrote under `tune_path` (a path or a
    storage URI): for each, the
    trial as Tune serialized it (`config`, `status`, ...) and its runtime metadata
    (`num_failures`, `last_result`, ...). Tune writes `experiment_state-<timestamp>.json`
    with a `trial_data` list of [trial JSON, runtime JSON] pairs; neither the file name nor
    the layout is a public API."""
    from pyarrow import fs

    filesystem, folder = fs.FileSystem.from_uri(str(tune_path))
    found = filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True))
    states = sorted(info.path for info in found
                    if posixpath.basename(info.path).startswith("experiment_state-")
                    and info.path.endswith(".json"))
    if not states:
        return
    with filesystem.open_input_stream(states[-1]) as stream:
        state = json.loads(stream.read())
    for trial_json, runtime_json in state["trial_data"]:
        yield json.loads(trial_json), json.loads(runtime_json)


def autoscaler_pending(gcs_address: str) -> list[str]:
    """Nodes the autoscaler is launching or has launched but not yet joined (none on a
    cluster without an autoscaler), from the v2 autoscaler's `get_cluster_status`, which Ray
    marks as a developer API."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(gcs_address)
    except Exception:  # noqa: BLE001 — no autoscaler, or an older one: nothing pending
        return []
    launches = [f"{r.count} x {r.instance_type_name} (launching)" for r in status.pending_launches]
    return launches + [f"{n.instance_type_name} {n.node_id or ''} (starting)".replace("  ", " ")
                       for n in status.pending_nodes]


def upload_py_modules(jobs: Any, runtime_env: dict[str, Any]) -> None:
    """Upload the folders of `runtime_env["py_modules"]`, packed with its `excludes`, and put
    their package URIs in its place, through the Jobs client `jobs`: the private step
    `JobSubmissionClient.submit_job` runs itself (`_upload_py_modules_if_needed`). A runtime
    env whose py_modules are URIs already is left as it is by `submit_job`."""
    jobs._upload_py_modules_if_needed(runtime_env)


@contextmanager
def token_auth(token_path: str) -> Iterator[None]:
    """This process joins a Ray that wants the token in `token_path`, within the block.
    Ray reads RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH into its cached RayConfig when it is
    imported and caches the token on first use; a process that imported Ray before it knew
    which Ray it would join has to refresh both (`Config.initialize` and the token loader's
    `reset_cache`, as Ray's own `_enable_token_auth` does). Afterwards the environment is
    as it was, refreshed again, so a later Ray of this process is not handed this token."""
    names = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path)
    _reload_auth_settings()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reload_auth_settings()


def _reload_auth_settings() -> None:
    if "ray" not in sys.modules:  # Ray reads the environment itself when imported
        return
    from ray._private.authentication.authentication_token_setup import AuthenticationTokenLoader
    from ray._raylet import Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class ExploitFacts:
    """What Tune's PopulationBasedTraining knows of an exploit when it builds the member's
    new config, beyond the two trials' configs."""

    member_iteration: int  # the member's last iteration before it copies
    donor_config: dict[str, Any]  # the donor's config, before perturbation
    donor_iteration: int  # the iteration of the donor's checkpoint that is copied
    checkpoint: str  # that checkpoint's path


def population_based_training(keep_member: Callable[[dict, dict, ExploitFacts], dict],
                              **options: Any) -> Any:
    """Tune's PopulationBasedTraining (`options` are its arguments), except that an exploiting
    member's new config comes from `keep_member(member config, perturbed donor config,
    facts)`: Tune would hand the member the donor's whole config, and a runyard config
    carries the trial's identity (its id, seed and MLflow run). PBT builds the new config in
    its private `_get_new_config(trial, trial_to_clone)`, and keeps each trial's newest
    result, and the donor's checkpoint, in the private `_trial_state[trial]` (`last_result`,
    `last_checkpoint`, resolved by the time `_get_new_config` is called). (`trial.last_result`
    is a result behind there: Tune updates it after the scheduler has decided.)"""
    return _member_keeping_pbt()(keep_member, **options)


@functools.cache
def _member_keeping_pbt() -> type:
    # Built on first use: importing Tune's schedulers here would load Tune into every
    # process that imports this module (the CLI, `launch`).
    from ray.tune.schedulers import PopulationBasedTraining

    class MemberKeepingPBT(PopulationBasedTraining):
        def __init__(self, keep_member: Callable[[dict, dict, ExploitFacts], dict],
                     **options: Any):
            super().__init__(**options)
            self.keep_member = keep_member

        def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
            new_config, operations = super()._get_new_config(trial, trial_to_clone)
            member, donor = self._trial_state[trial], self._trial_state[trial_to_clone]
            facts = ExploitFacts(
                member_iteration=int(member.last_result.get("training_iteration", 0)),
                donor_config=trial_to_clone.config,
                donor_iteration=int(donor.last_result.get("training_iteration", 0)),
                checkpoint=str(donor.last_checkpoint.path))
            return self.keep_member(trial.config, new_config, facts), operations

        def __reduce__(self) -> tuple:
            # Tune pickles the scheduler with the Tuner; a class made in a function is
            # found again through this module's function, not by its name.
            return (_unpickle_member_keeping_pbt, (self.__dict__,))

    return MemberKeepingPBT


def _unpickle_member_keeping_pbt(state: dict[str, Any]) -> Any:
    cls = _member_keeping_pbt()
    scheduler = cls.__new__(cls)
    scheduler.__dict__.update(state)
    return scheduler
