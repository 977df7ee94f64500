"""`runyard explain SWEEP`: why a job's trials are pending."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from runyard import api
from runyard.cli import output
from runyard.cli.common import add_storage
from runyard.errors import EXIT_OK

if TYPE_CHECKING:
    from runyard.cli.main import Commands

EPILOG = """\
examples:
  runyard explain digits-linear-sweep-20261123-030516
  runyard explain digits-linear-sweep-20261123-030516 --address 127.0.0.1:6379

Reads the job's Tune state (its paths are in the job's ledger, sweeps/<id>.json in its
storage: --storage, RUNYARD_STORAGE or .runyard/ here) and, with --address
(or RAY_ADDRESS), the cluster's free and total resources, placement groups waiting and nodes
the autoscaler is starting. For each PENDING trial it prints what it asks for and why it
waits: no node can ever hold it, max_concurrent reached, the autoscaler is starting nodes,
resources busy by running trials, or nothing (Tune is about to start it).
A job on an embedded Ray (no --address when it was run) cannot be joined from outside.
"""


def add_commands(commands: Commands) -> None:
    explain = commands.add("explain", "say why a job's trials are pending", EPILOG, cmd_explain)
    explain.add_argument("job", metavar="SWEEP", help="job id, or its MLflow run id")
    explain.add_argument("--address", help="the Ray cluster the job runs on (default: "
                                           "RAY_ADDRESS; none: the job's embedded Ray)")
    add_storage(explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from runyard.plan.resources import describe

    result = api.explain(args.job, args.address, args.storage)
    console = output.console()
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts().items())) or "no trials yet"
    console.print(f"{result.sweep_id}: {counts}", highlight=False)
    cluster = result.cluster
    if cluster is not None:
        console.print(f"cluster {cluster.address}: {len(cluster.nodes)} node(s); free "
                      f"{describe(cluster.available)} of {describe(cluster.total)}", highlight=False)
        console.print(f"placement groups pending: {cluster.pending_placement_groups}; autoscaler: "
                      f"{', '.join(cluster.autoscaler) or 'nothing starting'}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if not result.pending:
        console.print("no trial is pending", highlight=False)
        return EXIT_OK
    table = Table(title="pending trials", title_justify="left", header_style="bold")
    for column in ("trial", "config", "request", "why it waits"):
        table.add_column(column, overflow="fold")
    for trial in result.pending:
        table.add_row(trial.trial_id, trial.label, describe(trial.request), trial.reason)
    console.print(table)
    return EXIT_OK
