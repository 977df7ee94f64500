"""Every use of a Ray API that is not public, in one place, each checked against Ray 2.60.
A leaf below every layer (it imports nothing of runyard), so that launch and execute both
use it.

tests/test_ray_compat.py fails loudly (and fast) when an upgrade of Ray moves one of them;
change them here and nowhere else. (RLlib's algorithm registry is read by the rllib
baseline workload itself, because workloads may not import the executor; see
runyard.workloads.rl.rllib_baseline.)
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHECKED_WITH_RAY = "2.60"


def replace_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Give a restored Tuner this driver's callbacks. `Tuner.restore` brings back the
    callbacks pickled by the driver that started the experiment (whose MLflow writer is
    gone), and Tune has no public setter: the run config lives on the private
    `Tuner._local_tuner` (a TunerInternal) behind `get_run_config()`."""
    tuner._local_tuner.get_run_config().callbacks = callbacks


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
