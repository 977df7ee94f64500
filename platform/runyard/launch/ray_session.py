"""Start an embedded Ray in this process, or join a running cluster.

Which one: `--address` if given, else RAY_ADDRESS (set on a cluster's head node when the
driver was submitted through the Jobs API), else this user's warm Ray (launch.warm_ray) when
no other run is using it, else a fresh embedded Ray. Never Ray's own
auto-detection: a `ray start` cluster someone else left running on this machine must not
silently receive this job.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from runyard import processes, ray_compat
from runyard.launch import warm_ray


@dataclass(frozen=True)
class RaySession:
    address: str
    embedded: bool
    nodes: list[dict[str, float]]  # resources of each alive node


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None,
                num_gpus: int | None = None, dashboard: bool = False, warm: bool = True
                ) -> Iterator[RaySession]:
    """`dashboard`: the embedded Ray must run its dashboard, which serves the State API that
    Ray Train uses to watch its workers (data-parallel trials need it). Without an address,
    the run joins this user's warm Ray (launch.warm_ray), which always has one, when it can
    take its lease (and `warm`); else it starts its own Ray, as with RUNYARD_WARM_RAY=0."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    env_vars = {"RAY_CHDIR_TO_TRIAL_DIR": "0", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    kwargs = dict(
        logging_level=logging.WARNING,
        logging_config=ray.LoggingConfig(log_level="WARNING"),
        log_to_driver=True,
    )
    with ExitStack() as stack:
        held = (stack.enter_context(warm_ray.lease(num_cpus, num_gpus))
                if warm and address is None else None)
        joined = held is not None and _joined(held, env_vars, kwargs, stack)
        if not joined and address is None:
            # A new local Ray turns token auth on by itself (RAY_AUTH_MODE unset) and warns
            # about it on every run; runyard wants exactly that, so the notice is not the
            # user's news. (`runyard cluster local up` and the README say how clusters are
            # secured.)
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
                logging.ERROR)
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                     include_dashboard=dashboard, runtime_env={"env_vars": env_vars}, **kwargs)
        elif not joined:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, **kwargs)
        stack.callback(ray.shutdown)
        nodes = [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]
        context = ray.get_runtime_context()
        yield RaySession(address=context.gcs_address, embedded=address is None, nodes=nodes)


def _joined(held: warm_ray.WarmRay, env_vars: dict[str, str], kwargs: dict,
            stack: ExitStack) -> bool:
    """Join the warm Ray this run holds; False (and that Ray stopped) when it does not answer."""
    import ray

    auth = stack.enter_context(ExitStack())
    auth.enter_context(ray_compat.token_auth(held.token_path))
    runtime_env = auth.enter_context(warm_ray.driver_runtime_env(held, env_vars))
    try:
        ray.init(address=held.address, runtime_env=runtime_env, **kwargs)
    except ConnectionError as failed:
        logging.getLogger(__name__).warning(
            "runyard: the warm Ray at %s did not answer (%s); starting one for this run",
            held.address, failed)
        auth.close()
        warm_ray.stop_holder(held)
        return False
    return True


@contextmanager
def shared_local_ray(state_dir: Path, num_cpus: int | None = None) -> Iterator[RaySession]:
    """An embedded Ray that other runyard processes on this machine join with `--address`
    (the sweeps a queue runs side by side), with token authentication on like every cluster
    runyard starts: a fresh token, kept 0600 in `state_dir`, reaches Ray and every process
    started from here through RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH. Its dashboard runs, for
    the State API that data-parallel trials need.

    Ray reads RAY_AUTH_MODE once, when it is imported: call this before anything imports
    ray in this process."""
    if "ray" in sys.modules:
        raise RuntimeError("shared_local_ray() must come before `import ray`, which fixes "
                           "Ray's auth mode for the process")
    token = processes.write_private(Path(state_dir).resolve() / "ray_auth_token", secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    with ray_session(num_cpus=num_cpus, dashboard=True, warm=False) as session:
        yield session
