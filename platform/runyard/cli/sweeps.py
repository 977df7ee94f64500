"""Commands that read a finished sweep: best, compare, promote."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from runyard import api
from runyard.cli import output
from runyard.cli.common import add_storage
from runyard.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.console import Console

    from runyard.cli.main import Commands


def add_commands(commands: Commands) -> None:
    best = commands.add(
        "best", "the best configs of a sweep, with confidence intervals and which "
                "hyperparameters matter",
        "examples:\n  runyard best digits-linear-sweep-20261123-030516\n"
        "  runyard best 1fd447c0a1b04c80963c4db66bbf207f --top 5\n\n"
        "A config's score is the mean over its seeds of each trial's score on the sweep's "
        "metric,\nwith a 95% confidence interval when it ran on several seeds. A trial's "
        "score is its\nlast reported value, or what the sweep's `scope` says (all: its best; "
        "last-N-avg: the\nmean of its last N reports). Piped, no value is cut. An ended sweep "
        "is ranked from the\nscores its driver saved (.runyard/results/<id>.json), without "
        "reading MLflow.\n",
        cmd_best)
    best.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    best.add_argument("--top", type=int, default=10, help="rows to show (default: 10)")
    best.add_argument("--scope", help="score trials by this scope instead of the sweep's: "
                                      "last, all or last-N-avg")
    add_storage(best)

    compare = commands.add(
        "compare", "compare runs or sweeps, with a significance test",
        "examples:\n  runyard compare sweep-a-20261123-0101 sweep-b-20261123-0202\n"
        "  runyard compare RUN1,RUN2,RUN3 RUN4,RUN5,RUN6 --metric val_top1\n"
        "  runyard compare sweep-a-20261123-0101 --trials t0000,t0003\n\n"
        "Each side is a sweep or job (its best config's values over seeds), or a comma-"
        "separated\ngroup of MLflow run ids (each run's last value of --metric). With "
        "--trials A,B, one sweep's\ntwo configs (each named by a trial id of any of its seeds, "
        "or by its config label)\nare the sides, each with its seeds' scores. Sides are "
        "compared with Welch's t-test;\nat least 2 values per side are needed for a p-value.\n",
        cmd_compare)
    compare.add_argument("sides", nargs="+", metavar="SIDE",
                         help="2 or more sides; with --trials, the one sweep")
    compare.add_argument("--trials", metavar="A,B",
                         help="compare two configs of the sweep: trial ids or config labels")
    compare.add_argument("--metric", help="metric to compare (default: the first sweep's metric)")
    compare.add_argument("--mode", choices=["max", "min"], help="which direction is better")
    add_storage(compare)

    promote = commands.add(
        "promote", "write a sweep's best config back as a job spec",
        "examples:\n  runyard promote digits-linear-sweep-20261123-030516 --to jobs/digits_best.yaml\n\n"
        "The new spec extends the one the sweep ran from, sets the best config and seed, and\n"
        "records the sweep id, objective and date in a comment. It is a plain job: "
        "`runyard run` it.\n", cmd_promote)
    promote.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    promote.add_argument("--to", required=True, type=Path, metavar="FILE",
                         help="spec file to write (refuses to overwrite)")
    add_storage(promote)


def cmd_best(args: argparse.Namespace) -> int:
    report = api.best(args.job, storage=args.storage, scope=args.scope)
    if report.best is None:
        raise UserError(f"{report.job_id} has no finished trial reporting {report.metric} yet")
    console = output.console()
    if report.populations:
        _print_populations(console, report)
        return EXIT_OK
    # Titles are lines of their own: a table's title wraps at the table's width.
    console.print(f"{report.job_id}: best configs by mean {report.metric} ({report.mode}; scope "
                  f"{report.scope.name}: the mean over seeds of {report.scope.describe()})",
                  highlight=False)
    table = Table(header_style="bold")
    for column in ("#", report.metric, "± std", "95% CI", "seeds", "config", "trial"):
        # fold: on a narrow terminal a long config wraps inside its cell, never cut to "…"
        table.add_column(column, justify="right" if column not in ("config", "trial") else "left",
                         overflow="fold")
    for rank, row in enumerate(report.rows[: args.top], start=1):
        low, high = row.ci
        ci = f"{low:.4g} .. {high:.4g}" if row.seeds > 1 else "-"
        table.add_row(str(rank), f"{row.value:.4g}", f"{row.std:.2g}", ci,
                      str(row.seeds), row.label, row.trial_id)
    console.print(table)
    if report.sensitivity:
        console.print("which hyperparameters matter (Spearman rank correlation with "
                      f"{report.metric}; good region = span of the best quarter)",
                      highlight=False)
        ranked = Table(header_style="bold")
        for column in ("parameter", "rho", "p", "good region"):
            ranked.add_column(column, overflow="fold")
        for item in report.sensitivity:
            rho = "-" if item.rho is None else f"{item.rho:+.2f}"
            p = "-" if item.p is None else f"{item.p:.2g}"
            ranked.add_row(item.parameter, rho, p, item.good)
        console.print(ranked)
    return EXIT_OK


def _print_populations(console: Console, report: api.sweeps.SweepReport) -> None:
    """A population-based sweep: its objective, each population, the best member's schedule."""
    objective = report.best
    low, high = objective.ci
    ci = f", 95% CI {low:.4g} .. {high:.4g}" if objective.seeds > 1 else ""
    console.print(f"{report.job_id}: population-based; mean over {objective.seeds} "
                  f"population(s) of each one's best member: {report.metric} = "
                  f"{objective.value:.4g}{ci} ({report.mode})", highlight=False)
    table = Table(title="populations (one per seed), best first", title_justify="left",
                  header_style="bold")
    for column in ("seed", "best member", f"its {report.metric}", "population mean", "members"):
        table.add_column(column)
    for row in report.populations:
        table.add_row(str(row.seed), row.best.trial_id, f"{row.best.value:.4g}",
                      f"{row.mean:.4g}", str(row.members))
    console.print(table)
    console.print(f"schedule of the best member, {objective.trial_id} (run {objective.run_id}):",
                  highlight=False)
    for line in api.sweeps.schedule_lines(report.schedule):
        console.print(f"  {line}", highlight=False)


def cmd_compare(args: argparse.Namespace) -> int:
    metric, mode, sides, comparisons = api.compare(args.sides, args.metric, args.mode,
                                                   args.storage, args.trials)
    console = output.console()
    console.print(f"{metric} ({mode} is better)", highlight=False)
    table = Table(header_style="bold")
    for column in ("side", "mean", "std", "n"):
        table.add_column(column, overflow="fold")
    for name, values in sides:
        std = f"{statistics.stdev(values):.3g}" if len(values) > 1 else "-"
        table.add_row(name, f"{sum(values) / len(values):.4g}", std, str(len(values)))
    console.print(table)
    for comparison in comparisons:
        console.print(comparison.sentence(mode), highlight=False)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    promoted = api.promote(args.job, args.to, args.storage)
    best = promoted.best
    print(f"wrote {promoted.path}: {best.label} ({promoted.metric}={best.value:.4g}"
          f"{api.sweeps.spread(best)}, scope {promoted.scope.name})")
    print(f"run it: runyard run {promoted.path}")
    return EXIT_OK
