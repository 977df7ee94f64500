"""Commands that read a finished sweep: best, compare, promote."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from runyard.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from runyard.cli.main import Commands
    from runyard.execute.ledger import Ledger


def add_commands(commands: Commands) -> None:
    best = commands.add(
        "best", "the best configs of a sweep, with confidence intervals and which "
                "hyperparameters matter",
        "examples:\n  runyard best digits-linear-sweep-20261123-030516\n"
        "  runyard best 1fd447c0a1b04c80963c4db66bbf207f --top 5\n\n"
        "A config's score is the mean over its seeds of each trial's last value of the "
        "sweep's metric,\nwith a 95% confidence interval when it ran on several seeds.\n",
        cmd_best)
    best.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    best.add_argument("--top", type=int, default=10, help="rows to show (default: 10)")

    compare = commands.add(
        "compare", "compare runs or sweeps, with a significance test",
        "examples:\n  runyard compare sweep-a-20261123-0101 sweep-b-20261123-0202\n"
        "  runyard compare RUN1,RUN2,RUN3 RUN4,RUN5,RUN6 --metric val_top1\n\n"
        "Each side is a sweep or job (its best config's values over seeds), or a comma-"
        "separated\ngroup of MLflow run ids (each run's last value of --metric). Sides are "
        "compared with\nWelch's t-test; at least 2 values per side are needed for a p-value.\n",
        cmd_compare)
    compare.add_argument("sides", nargs="+", metavar="SIDE", help="2 or more sides")
    compare.add_argument("--metric", help="metric to compare (default: the first sweep's metric)")
    compare.add_argument("--mode", choices=["max", "min"], help="which direction is better")

    promote = commands.add(
        "promote", "write a sweep's best config back as a job spec",
        "examples:\n  runyard promote digits-linear-sweep-20261123-030516 --to jobs/digits_best.yaml\n\n"
        "The new spec extends the one the sweep ran from, sets the best config and seed, and\n"
        "records the sweep id, objective and date in a comment. It is a plain job: "
        "`runyard run` it.\n", cmd_promote)
    promote.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    promote.add_argument("--to", required=True, type=Path, metavar="FILE",
                         help="spec file to write (refuses to overwrite)")


@dataclass
class _Sweep:
    ledger: Ledger
    spec: Any
    metric: str
    mode: str
    rows: list[dict[str, Any]]


def _load_sweep(key: str, metric: str | None = None) -> _Sweep:
    from runyard import workloads
    from runyard.execute.job import load_ledger_spec
    from runyard.execute.ledger import Ledger
    from runyard.tracking.reconcile import reconcile
    from runyard.tracking.results import config_summaries, trial_results
    from runyard.tracking.store import client_for

    ledger = Ledger.find(Path.cwd(), key)
    spec = load_ledger_spec(ledger)
    metrics = workloads.get(spec.workload).metrics
    metric = metric or (spec.sweep.metric if spec.sweep else next(iter(metrics)))
    if metric not in metrics:
        raise UserError(f"{spec.workload} does not report {metric!r}; it reports: "
                        f"{', '.join(sorted(metrics))}")
    mode = spec.sweep.mode if spec.sweep and metric == spec.sweep.metric else metrics[metric]
    client = client_for(ledger.tracking_uri)
    reconcile(client)
    if spec.sweep is None:
        run = client.get_run(ledger.run_id)
        value = run.data.metrics.get(metric)
        rows = [] if value is None else [{
            "sample": 0, "trial_id": "t0000", "run_id": ledger.run_id, "label": spec.name,
            "value": value, "std": 0.0, "ci": (value, value), "seeds": 1, "values": [value],
            "params": run.data.params}]
    else:
        rows = config_summaries(trial_results(client, ledger.run_id, metric), mode)
    return _Sweep(ledger, spec, metric, mode, rows)


def cmd_best(args: argparse.Namespace) -> int:
    from runyard.tracking.results import sensitivity

    sweep = _load_sweep(args.job)
    if not sweep.rows:
        raise UserError(f"{sweep.ledger.sweep_id} has no finished trial reporting {sweep.metric} yet")
    console = Console()
    table = Table(title=f"{sweep.ledger.sweep_id}: best configs by mean {sweep.metric} "
                        f"({sweep.mode})", title_justify="left", header_style="bold")
    for column in ("#", sweep.metric, "± std", "95% CI", "seeds", "config", "trial"):
        table.add_column(column, justify="right" if column not in ("config", "trial") else "left")
    for rank, row in enumerate(sweep.rows[: args.top], start=1):
        low, high = row["ci"]
        ci = f"{low:.4g} .. {high:.4g}" if row["seeds"] > 1 else "-"
        table.add_row(str(rank), f"{row['value']:.4g}", f"{row['std']:.2g}", ci,
                      str(row["seeds"]), row["label"], row["trial_id"])
    console.print(table)
    if sweep.spec.sweep is not None and len(sweep.rows) >= 3:
        space = {key: d.kind for key, d in sweep.spec.sweep.space.items()}
        report = Table(title="which hyperparameters matter (Spearman rank correlation with "
                             f"{sweep.metric}; good region = span of the best quarter)",
                       title_justify="left", header_style="bold")
        for column in ("parameter", "rho", "p", "good region"):
            report.add_column(column)
        for item in sensitivity(sweep.rows, space):
            rho = "-" if item["rho"] is None else f"{item['rho']:+.2f}"
            p = "-" if item["p"] is None else f"{item['p']:.2g}"
            report.add_row(item["parameter"], rho, p, item["good"])
        console.print(report)
    return EXIT_OK


def _side(text: str, metric: str | None) -> tuple[str, list[float], str | None, str | None]:
    """(name, values, metric, mode) of one side of a comparison."""
    from runyard.execute.ledger import Ledger
    from runyard.tracking.store import client_for, resolve_tracking_uri

    if "," not in text:
        try:
            sweep = _load_sweep(text, metric)
        except UserError:
            if not Ledger.folder(Path.cwd()).is_dir():
                raise
        else:
            if not sweep.rows:
                raise UserError(f"{text}: no finished trial reports {sweep.metric}")
            return sweep.ledger.sweep_id, sweep.rows[0]["values"], sweep.metric, sweep.mode
    if metric is None:
        raise UserError(f"{text}: give --metric when comparing runs by id")
    client = client_for(resolve_tracking_uri(None, Path.cwd()))
    values = []
    for run_id in filter(None, text.split(",")):
        try:
            run = client.get_run(run_id)
        except Exception as error:  # noqa: BLE001 — MLflow raises its own exception type
            raise UserError(f"{run_id}: no such job or MLflow run ({error})") from None
        if metric not in run.data.metrics:
            raise UserError(f"run {run_id} has no metric {metric!r}")
        values.append(run.data.metrics[metric])
    name = text if len(text) <= 24 else f"{text[:21]}..."
    return name, values, metric, None


def cmd_compare(args: argparse.Namespace) -> int:
    from runyard.tracking.results import welch

    if len(args.sides) < 2:
        raise UserError("compare needs at least two sides")
    sides = []
    metric, mode = args.metric, args.mode
    for text in args.sides:
        name, values, side_metric, side_mode = _side(text, metric)
        metric = metric or side_metric
        mode = mode or side_mode
        sides.append((name, values))
    mode = mode or "max"
    console = Console()
    table = Table(title=f"{metric} ({mode} is better)", title_justify="left", header_style="bold")
    for column in ("side", "mean", "std", "n"):
        table.add_column(column)
    for name, values in sides:
        std = f"{statistics.stdev(values):.3g}" if len(values) > 1 else "-"
        table.add_row(name, f"{sum(values) / len(values):.4g}", std, str(len(values)))
    console.print(table)
    first_name, first_values = sides[0]
    for name, values in sides[1:]:
        comparison = welch(metric, (first_name, name), first_values, values)
        console.print(comparison.sentence(mode), highlight=False)
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    from runyard.execute.job import planned_trials
    from runyard.spec import load_spec

    sweep = _load_sweep(args.job)
    if sweep.spec.sweep is None:
        raise UserError(f"{sweep.ledger.sweep_id} is a plain job, not a sweep: nothing to promote")
    if not sweep.rows:
        raise UserError(f"{sweep.ledger.sweep_id} has no finished trial to promote")
    target: Path = args.to
    if target.exists():
        raise UserError(f"{target} exists; choose another --to (promote never overwrites)")
    best = sweep.rows[0]
    trial = next(t for t in planned_trials(sweep.ledger) if t.trial_id == best["trial_id"])
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in target.stem)
    spread = f" ± {best['std']:.3g} over {best['seeds']} seeds" if best["seeds"] > 1 else ""
    header = (f"# Promoted by `runyard promote` on {time.strftime('%Y-%m-%d')} from sweep\n"
              f"# {sweep.ledger.sweep_id} (MLflow run {sweep.ledger.run_id}): best config by mean\n"
              f"# {sweep.metric} = {best['value']:.6g}{spread} (trial {best['trial_id']}).\n")
    body: dict[str, Any] = {}
    base = Path(sweep.ledger.spec_path) if sweep.ledger.spec_path else None
    if base is not None and base.is_file():
        body["extends"] = os.path.relpath(base, target.resolve().parent)
        body.update({"name": name, "sweep": None})
    else:
        body.update({k: v for k, v in sweep.spec.as_plain().items() if k != "sweep"})
        body["name"] = name
    body.update({"seed": trial.seed, "config": trial.config})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + yaml.safe_dump(body, sort_keys=False))
    promoted = load_spec(target)  # it must validate, and reproduce the trial's config
    if promoted.config != trial.config or promoted.sweep is not None:
        raise RuntimeError(f"{target} does not reproduce trial {trial.trial_id}; please report this")
    print(f"wrote {target}: {best['label']} ({sweep.metric}={best['value']:.4g}{spread})")
    print(f"run it: runyard run {target}")
    return EXIT_OK
