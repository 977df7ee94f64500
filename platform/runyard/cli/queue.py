"""`runyard queue ...`: schedule sweeps to run one after another, by priority."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from runyard.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from runyard.cli.main import Commands

EPILOG = """\
examples:
  runyard queue add jobs/digits_linear_sweep.yaml --priority 10
  runyard queue add jobs/cartpole_pg_sweep.yaml --after digits-linear-sweep-q1
  runyard queue ls
  runyard queue run                 # drain it: highest priority first, --after respected
  runyard queue rm 3

The queue lives in .runyard/queue.db. Each entry's job id is fixed when it is queued, so a
`queue run` that was killed picks up where it stopped: a sweep that was mid-run is resumed.
"""


def add_commands(commands: Commands) -> None:
    queue = commands.add("queue", "schedule sweeps to run one after another", EPILOG, None)
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="queue a spec", description="queue a spec")
    add.add_argument("spec", metavar="SPEC")
    add.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add.add_argument("--priority", type=int, default=0, help="higher runs first (default: 0)")
    add.add_argument("--after", metavar="JOB", help="run only once this job has finished")
    add.set_defaults(func=cmd_add)

    ls = actions.add_parser("ls", help="list the queue", description="list the queue")
    ls.set_defaults(func=cmd_ls)

    rm = actions.add_parser("rm", help="remove a queued entry", description="remove an entry")
    rm.add_argument("entry", type=int, metavar="ID")
    rm.set_defaults(func=cmd_rm)

    run = actions.add_parser("run", help="drain the queue", description="drain the queue")
    run.add_argument("--address", help="Ray cluster every sweep joins (default: embedded Ray)")
    run.set_defaults(func=cmd_run)


def cmd_add(args: argparse.Namespace) -> int:
    from runyard.execute.queue import SweepQueue
    from runyard.spec import load_spec

    spec = load_spec(args.spec, args.overrides)  # a queued spec is a valid spec
    queue = SweepQueue(Path.cwd())
    job_id = f"{spec.name}-q{len(queue.entries()) + 1}-{time.strftime('%Y%m%d-%H%M%S')}"
    entry = queue.add(Path(args.spec), args.overrides, args.priority, args.after, job_id)
    print(f"queued #{entry.id}: {entry.job_id} (priority {entry.priority}"
          f"{', after ' + entry.after if entry.after else ''})")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from runyard.execute.queue import SweepQueue

    entries = SweepQueue(Path.cwd()).entries()
    console = Console()
    if not entries:
        console.print("the queue is empty; add a spec with: runyard queue add SPEC")
        return EXIT_OK
    table = Table(box=None, header_style="bold")
    for column in ("id", "priority", "status", "job id", "after", "spec", "exit"):
        table.add_column(column)
    for e in entries:
        table.add_row(str(e.id), str(e.priority), e.status, e.job_id, e.after or "",
                      e.spec, "" if e.exit_code is None else str(e.exit_code))
    console.print(table)
    return EXIT_OK


def cmd_rm(args: argparse.Namespace) -> int:
    from runyard.execute.queue import SweepQueue

    SweepQueue(Path.cwd()).remove(args.entry)
    print(f"removed #{args.entry}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from runyard.execute.queue import SweepQueue, runyard_command

    extra = ["--address", args.address] if args.address else []
    failures = SweepQueue(Path.cwd()).run(runyard_command(), extra,
                                          lambda line: print(f"queue: {line}", flush=True))
    return EXIT_FAILED if failures else EXIT_OK
