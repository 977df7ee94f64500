"""The queue of scheduled sweeps: add, list, remove, and drain it onto one Ray.

Each queued sweep runs as its own `runyard run` process (a crashing sweep cannot take the
queue down), started from the same RunRequest / ContinueRequest the CLI builds from its
flags."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.api.jobs import validate
from runyard.api.requests import ContinueRequest, RunRequest
from runyard.processes import sigterm_as_interrupt

if TYPE_CHECKING:
    from runyard.execute.queue import Entry, SweepQueue


def open_queue() -> SweepQueue:
    """This working dir's queue (.runyard/queue.db)."""
    from runyard.execute.queue import SweepQueue

    return SweepQueue(Path.cwd())


def add(spec: str, overrides: list[str], priority: int = 0, after: str | None = None) -> Entry:
    """Queue a valid spec; its job id is fixed now, so a restarted runner finds which job
    the entry became."""
    planned = validate(spec, overrides)
    queue = open_queue()
    job_id = f"{planned.spec.name}-q{len(queue.entries()) + 1}-{time.strftime('%Y%m%d-%H%M%S')}"
    return queue.add(Path(spec), overrides, priority, after, job_id)


def drain(say: Callable[[str], None], address: str | None = None, num_cpus: int | None = None,
          max_running: int | None = None, cluster_config: str | None = None) -> int:
    """Run every ready entry, side by side as the cluster has room, on the Ray at `address`
    (or RAY_ADDRESS), else on an embedded Ray with token auth that the sweeps join; the node
    types of `cluster_config` count as capacity for each sweep (an autoscaling cluster).
    Returns how many entries failed or stayed blocked; KeyboardInterrupt (Ctrl-C, SIGTERM)
    after the running sweeps were stopped and requeued."""
    from runyard.launch import ray_session
    from runyard.launch.ray_session import shared_local_ray

    queue = open_queue()
    address = address or os.environ.get("RAY_ADDRESS")
    if cluster_config is not None:
        from runyard.plan import cluster_config_nodes

        cluster_config_nodes(cluster_config)  # a bad file is refused once, here, not per sweep
        cluster_config = str(Path(cluster_config).resolve())
    # Nothing above imports ray: the embedded Ray's token auth must be set up before that.
    cluster = ray_session(address) if address else shared_local_ray(queue.folder, num_cpus)
    with cluster as session, sigterm_as_interrupt():
        from runyard.execute.queue import ClusterRoom

        cpus = sum(node.get("CPU", 0) for node in session.nodes)
        where = f"the Ray cluster at {address}" if address else "an embedded Ray (token auth)"
        say(f"sweeps run on {where}: {len(session.nodes)} node(s), {cpus:g} CPUs")
        command_for = functools.partial(entry_command, cluster_config=cluster_config)
        return queue.run(command_for, session.address, ClusterRoom(), say, max_running)


def entry_command(entry: Entry, resuming: bool, address: str,
                  cluster_config: str | None = None) -> list[str]:
    """The command line that runs (or resumes) a queue entry's job on the Ray at `address`."""
    if resuming:
        request = ContinueRequest(entry.job_id, "resume", address=address,
                                  cluster_config=cluster_config).argv()
    else:
        request = RunRequest(entry.spec, tuple(entry.overrides), job_id=entry.job_id,
                             address=address, cluster_config=cluster_config).argv()
    return [*runyard_executable(), *request]


def runyard_executable() -> list[str]:
    """How to start runyard again from here (the same interpreter and package)."""
    script = Path(sys.executable).with_name("runyard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "runyard.cli.main"]
