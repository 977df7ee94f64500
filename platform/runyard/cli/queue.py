"""`runyard queue ...`: schedule sweeps; the runner drains them by priority, side by side
as the cluster has room."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from rich.table import Table

from runyard import api
from runyard.cli import output
from runyard.cli.common import add_cluster_config, add_set
from runyard.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    from runyard.cli.main import Commands

EPILOG = """\
examples:
  runyard queue add jobs/digits_linear_sweep.yaml --priority 10
  runyard queue add jobs/cartpole_pg_sweep.yaml --after digits-linear-sweep-q1
  runyard queue ls
  runyard queue run                 # drain it: highest priority first, --after respected
  runyard queue run --num-cpus 8    # ... on an embedded Ray of 8 CPUs
  runyard queue run --address 10.0.0.5:6379   # ... on a running Ray cluster
  runyard queue rm 3

`queue run` starts the highest-priority ready sweep as soon as the cluster has room for one
of its trials: when a sweep is down to its last few trials, the next one fills the free
slots instead of waiting for them. Sweeps share one Ray: an embedded one the runner starts
(token auth on), or the cluster at --address / RAY_ADDRESS. Each sweep's output goes to
.runyard/queue/<job id>.log; the runner prints when each starts and ends.

The queue lives in .runyard/queue.db. Each entry's job id is fixed when it is queued, so a
`queue run` that was killed picks up where it stopped: a sweep that was mid-run is resumed.
Ctrl-C (or SIGTERM) stops the running sweeps, their runs end KILLED, and they go back in
the queue.
"""


def add_commands(commands: Commands) -> None:
    queue = commands.add("queue", "schedule sweeps; run them by priority as the cluster has room",
                         EPILOG, None)
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="queue a spec", description="queue a spec")
    add.add_argument("spec", metavar="SPEC")
    add_set(add)
    add.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    add.add_argument("--after", metavar="JOB", help="run only once this job has finished")
    add.set_defaults(func=cmd_add)

    ls = actions.add_parser("ls", help="list the queue", description="list the queue")
    ls.set_defaults(func=cmd_ls)

    rm = actions.add_parser("rm", help="remove a queued entry", description="remove an entry")
    rm.add_argument("entry", type=int, metavar="ID")
    rm.set_defaults(func=cmd_rm)

    run = actions.add_parser("run", help="drain the queue", description="drain the queue")
    run.add_argument("--address", help="Ray cluster every sweep joins (default: RAY_ADDRESS, "
                                       "else an embedded Ray started here)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    add_cluster_config(run)
    run.add_argument("--max-running", type=at_least_one, metavar="N",
                     help="run at most N sweeps at once (default: as many as the cluster has "
                          "room for; 1 runs them one after another)")
    run.set_defaults(func=cmd_run)


def at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, found {text!r}")
    return int(text)


def cmd_add(args: argparse.Namespace) -> int:
    entry = api.queue.add(args.spec, args.overrides, args.priority, args.after)
    print(f"queued #{entry.id}: {entry.job_id} (priority {entry.priority}"
          f"{', after ' + entry.after if entry.after else ''})")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    entries = api.queue.open_queue().entries()
    console = output.console()
    if not entries:
        console.print("the queue is empty; add a spec with: runyard queue add SPEC")
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    for column in ("id", "priority", "status", "job id", "after", "spec", "exit"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(str(e.id), str(e.priority), e.status, e.job_id, e.after or "",
                      e.spec, "" if e.exit_code is None else str(e.exit_code))
    console.print(table)
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    api.queue.open_queue().remove(args.entry)
    print(f"removed #{args.entry}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} queue: {line}", flush=True)

    try:
        failures = api.queue.drain(say, args.address, args.num_cpus, args.max_running,
                                   args.cluster_config)
    except KeyboardInterrupt:
        say("stopped")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failures else EXIT_OK
