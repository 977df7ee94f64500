"""The `runyard` command: the top layer, which strings spec → plan → launch → execute together.

Exit codes scripts can rely on: 0 success, 1 the job ran and failed, 2 invalid input
(nothing was started), 130 interrupted (runs marked KILLED).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from rich.console import Console

from runyard import __version__
from runyard.errors import EXIT_INVALID, EXIT_OK, RunFailed, UserError

EPILOG_RUN = """\
examples:
  runyard run jobs/digits_linear.yaml
  runyard run jobs/digits_linear_sweep.yaml --set sweep.samples=4
  runyard run jobs/cartpole_pg.yaml --set config.lr=3e-3 --set seed=1
  runyard run jobs/digits_linear.yaml --address 127.0.0.1:6379   # join a running Ray cluster

A spec with a `sweep:` block runs as a sweep: a parent MLflow run with one child run per
trial. Runs are tracked in .runyard/mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI
says otherwise; `runyard ls` lists them and `runyard ui` opens them in the MLflow UI.
"""

EPILOG_VALIDATE = """\
examples:
  runyard validate jobs/*.yaml
  runyard validate jobs/digits_linear_sweep.yaml --show        # the spec after extends/--set
  runyard validate jobs/digits_linear.yaml --set config.lr=1e-2

Every problem is reported at once, as FILE:LINE: FIELD: what was found; what was expected.
Validation starts nothing: no Ray, no MLflow run.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runyard",
        description="Run ML experiments from YAML job specs on Ray, tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `runyard run jobs/digits_linear.yaml`, then `runyard ls` and "
               "`runyard ui`.\nEach command has its own --help with examples.",
    )
    parser.add_argument("--version", action="version", version=f"runyard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, epilog: str = "",
                func: Callable[[argparse.Namespace], int] | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub

    validate = command("validate", "check job specs without running anything",
                       EPILOG_VALIDATE, cmd_validate)
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="job spec YAML files")
    _add_set(validate)
    validate.add_argument("--show", action="store_true",
                          help="print each resolved spec (after extends: and --set) as YAML")

    run = command("run", "run a job or a sweep", EPILOG_RUN, cmd_run)
    run.add_argument("spec", metavar="SPEC", help="job spec YAML file")
    _add_set(run)
    run.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, "
                                       "else start an embedded Ray in this process)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    _add_tracking(run)

    ls = command("ls", "list recent jobs and sweeps from MLflow",
                 "examples:\n  runyard ls\n  runyard ls --experiment digits --limit 5\n", cmd_ls)
    ls.add_argument("--experiment", help="only this MLflow experiment")
    ls.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    _add_tracking(ls)

    ui = command("ui", "open the MLflow UI on runyard's tracking store",
                 "examples:\n  runyard ui\n  runyard ui --port 5001\n", cmd_ui)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    _add_tracking(ui)
    return parser


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a spec field by dotted key, e.g. --set config.lr=3e-4 "
                             "(repeatable; values are read as YAML)")


def _add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                                               "MLFLOW_TRACKING_URI, else .runyard/mlflow.db)")


# ------------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from runyard.plan import expand
    from runyard.spec import SpecError, load_spec

    failures = 0
    for path in args.specs:
        try:
            spec = load_spec(path, args.overrides)
        except SpecError as error:
            failures += 1
            print(error, file=sys.stderr)
            continue
        trials = len(expand(spec))
        print(f"ok  {path}: {spec.name} ({spec.workload}, {trials} trial"
              f"{'s' if trials != 1 else ''}, spec hash {spec.hash})")
        if args.show:
            print(yaml.safe_dump(spec.as_plain(), sort_keys=False))
    return EXIT_INVALID if failures else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from runyard import workloads
    from runyard.execute import run_job
    from runyard.launch import ray_session
    from runyard.plan import check_feasible, expand
    from runyard.spec import load_spec, workload_context
    from runyard.tracking.store import resolve_tracking_uri

    console = Console()
    spec = load_spec(args.spec, args.overrides)
    trials = expand(spec)
    workload_cls = workloads.get(spec.workload)
    config = workload_cls.Config.model_validate(spec.config)
    problems = workload_cls.check_inputs(config, workload_context(spec))
    if problems:
        raise UserError(f"{args.spec}: cannot run here:\n" + "\n".join(f"  {p}" for p in problems))
    workdir = Path.cwd()
    uri = resolve_tracking_uri(args.tracking_uri, workdir)
    with ray_session(args.address, num_cpus=args.num_cpus) as session:
        check_feasible(spec, trials, session.nodes)
        outcome = run_job(spec, trials, uri, workdir, console)
    _print_outcome(console, spec, outcome, uri)
    return outcome.exit_code


def _print_outcome(console: Console, spec, outcome, uri: str) -> None:
    style = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow"}[outcome.status]
    console.print(f"[{style}]{outcome.status}[/]  {spec.name}  MLflow run {outcome.run_id}",
                  highlight=False)
    if outcome.best:
        best = outcome.best
        spread = f" ± {best['std']:.4g} over {best['seeds']} seeds" if best["seeds"] > 1 else ""
        console.print(f"best trial {best['trial_id']}: {spec.sweep.metric}={best['value']:.4g}"
                      f"{spread}  ({best['label']})", highlight=False)
    if outcome.failed_trials:
        console.print(f"failed trials: {', '.join(outcome.failed_trials)} "
                      "(tracebacks are in each run's error.txt artifact)", highlight=False)
    ui_hint = "runyard ui" + ("" if uri == _default_uri() else f" --tracking-uri {uri}")
    console.print(f"see it: {ui_hint}", highlight=False)


def _default_uri() -> str:
    from runyard.tracking.store import resolve_tracking_uri

    return resolve_tracking_uri(None, Path.cwd())


def cmd_ls(args: argparse.Namespace) -> int:
    from runyard.tracking.listing import recent_jobs, render_jobs
    from runyard.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    rows = recent_jobs(uri, args.experiment, args.limit)
    render_jobs(Console(), rows, uri)
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from runyard.tracking.store import artifact_root, is_embedded, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    if not is_embedded(uri):
        raise UserError(f"{uri} is a tracking server already: open it in a browser")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--default-artifact-root", artifact_root(uri),
               "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on {uri}\n  http://{args.host}:{args.port}   (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return EXIT_OK


# ---------------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_INVALID
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    try:
        return args.func(args)
    except (UserError, RunFailed) as error:
        print(f"runyard: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
