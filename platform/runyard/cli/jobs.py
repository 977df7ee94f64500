"""Commands that start, continue and list jobs: validate, run, resume, rerun-failed, extend,
ls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from runyard import api
from runyard.api.requests import ContinueRequest, RunRequest
from runyard.cli import output
from runyard.cli.common import (add_cluster, add_cluster_config, add_set, add_slurm, add_storage, add_tracking,
                                slurm_options)
from runyard.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK

if TYPE_CHECKING:
    from runyard.cli.main import Commands

EPILOG_RUN = """\
examples:
  runyard run jobs/digits_linear.yaml
  runyard run jobs/digits_linear_sweep.yaml --set sweep.samples=4
  runyard run jobs/digits_linear.yaml --set config.lr=3e-3 --set seed=1
  runyard run jobs/digits_linear.yaml --address 127.0.0.1:6379   # join a running Ray cluster

A spec with a `sweep:` block runs as a sweep: a parent MLflow run with one child run per
trial. Runs are tracked in .runyard/mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI
says otherwise; `runyard ls` lists them and `runyard ui` opens them in the MLflow UI.
The job id it prints is what `runyard resume`, `rerun-failed`, `extend`, `best` and
`promote` take (the MLflow run id works too).
"""

EPILOG_VALIDATE = """\
examples:
  runyard validate jobs/*.yaml
  runyard validate jobs/digits_linear_sweep.yaml --show        # the spec after extends/--set
  runyard validate jobs/digits_linear.yaml --set config.lr=1e-2

Every problem is reported at once, as FILE:LINE: FIELD: what was found; what was expected.
Validation starts nothing: no Ray, no MLflow run.
"""

EPILOG_SUBMIT = """\
examples:
  runyard cluster local up --workers 2                 # a real multi-node cluster here
  runyard submit jobs/digits_linear_sweep.yaml
  runyard status digits-linear-sweep-20261123-030516
  runyard logs digits-linear-sweep-20261123-030516 -f
  runyard stop digits-linear-sweep-20261123-030516
  runyard submit jobs/imagenet_resnet50.yaml --cluster-config cluster.yaml  # autoscaling
  runyard submit jobs/digits_linear_sweep.yaml --slurm --nodes 2 --storage /scratch/$USER/runyard \
      --time 02:00:00 --setup "source ~/venv/bin/activate"   # from a Slurm login node

The spec is validated and planned here first; with --cluster-config, every trial's request
is also checked against the node types the cluster can grow to, so a request none of them
can hold fails here, in seconds, before anything is submitted. Then the project (minus
.runyard/, .venv/, data/ and large files) travels as the job's working dir and `runyard run
SPEC` runs as its driver on the head node, tracking into the cluster's MLflow server. The
token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token and is never printed.
"""

EPILOG_RESUME = """\
examples:
  runyard resume digits-linear-sweep-20261123-030516
  runyard resume 1fd447c0a1b04c80963c4db66bbf207f        # the sweep's MLflow run id
  runyard resume JOB --address http://HEAD:8265         # a submitted job, continued on its cluster

Continues a job whose driver died (killed, machine lost, Ctrl-C): every unfinished trial goes
on from its last checkpoint (set checkpoint.every in the spec), writing to the MLflow run it
already has. Finished trials are not run again.
"""


def add_commands(commands: Commands) -> None:
    validate = commands.add("validate", "check job specs without running anything",
                            EPILOG_VALIDATE, cmd_validate)
    validate.add_argument("specs", nargs="+", metavar="SPEC", help="job spec YAML files")
    add_set(validate)
    validate.add_argument("--show", action="store_true",
                          help="print each resolved spec (after extends: and --set) as YAML")

    run = commands.add("run", "run a job or a sweep", EPILOG_RUN, cmd_run)
    run.add_argument("spec", metavar="SPEC", help="job spec YAML file")
    add_set(run)
    run.add_argument("--id", dest="job_id", help="job id (default: NAME-YYYYMMDD-HHMMSS)")
    run.add_argument("--skip-preflight", action="store_true",
                     help="start a sweep even if its preflight checks fail")
    add_cluster(run)
    add_cluster_config(run)

    preflight = commands.add(
        "preflight", "the Recipe's sanity checks on a spec's model and data, in seconds",
        "examples:\n  runyard preflight jobs/synth_convnet.yaml\n"
        "  runyard preflight jobs/imagenet64_linear.yaml --set config.init_std=1.0\n\n"
        "Checks: loss at init vs -log(1/classes), overfitting one small batch, an input-"
        "independent\nbaseline, that example i's gradient reaches input i only, and that one "
        "seed gives one set\nof numbers. The results are a table here and an MLflow run. "
        "`runyard run` runs them\nbefore every sweep of a workload that has them and does "
        "not start on a failure\n(--skip-preflight to start anyway). Exit 1 when a check fails.\n",
        cmd_preflight)
    preflight.add_argument("spec", metavar="SPEC")
    add_set(preflight)
    add_tracking(preflight)

    submit = commands.add("submit", "run a job on a Ray cluster, through the Jobs API",
                          EPILOG_SUBMIT, cmd_submit)
    submit.add_argument("spec", metavar="SPEC", help="job spec YAML file, inside this project")
    add_set(submit)
    submit.add_argument("--address", help="Jobs API address, e.g. http://127.0.0.1:8265 "
                                          "(default: RAY_ADDRESS, else `cluster local up`'s)")
    submit.add_argument("--id", dest="job_id", help="job id (default: NAME-YYYYMMDD-HHMMSS)")
    submit.add_argument("--tracking-uri", help="tracking URI the driver uses (default: the "
                                               "cluster's own MLflow server)")
    submit.add_argument("--max-upload-mb", type=float, default=100.0,
                        help="refuse to ship a project larger than this (default: 100); "
                             "Python environments and training output never ship")
    add_cluster_config(submit)
    add_storage(submit)
    add_slurm(submit, "submit to Slurm")

    resume = commands.add("resume", "continue a job whose driver died", EPILOG_RESUME, cmd_continue)
    resume.add_argument("job", metavar="JOB", help="job id, or its MLflow run id")
    add_cluster(resume, continues=True)
    add_cluster_config(resume)
    add_slurm(resume, "continue a job submitted with --slurm in a new Slurm allocation")

    rerun = commands.add("rerun-failed", "run again only the trials of a job that failed",
                         "examples:\n  runyard rerun-failed digits-linear-sweep-20261123-030516\n\n"
                         "Each failed trial continues from its last checkpoint (or starts over "
                         "if it had none)\nin the MLflow run it already has; nothing else runs.\n",
                         cmd_continue)
    rerun.add_argument("job", metavar="JOB", help="job id, or its MLflow run id")
    add_cluster(rerun, continues=True)
    add_cluster_config(rerun)

    extend = commands.add("extend", "add trials to a finished sweep, under the same parent run",
                          "examples:\n  runyard extend digits-linear-sweep-20261123-030516 "
                          "--samples 16\n\nNew configs are drawn after the existing ones: "
                          "the sweep's first trials never change.\n", cmd_continue)
    extend.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    extend.add_argument("--samples", type=int, required=True, help="configs to add")
    add_cluster(extend, continues=True)
    add_cluster_config(extend)

    ls = commands.add("ls", "list recent jobs and sweeps from MLflow",
                      "examples:\n  runyard ls\n  runyard ls --experiment digits --limit 5\n\n"
                      "Runs whose driver process is gone are marked FAILED on the way.\n", cmd_ls)
    ls.add_argument("--experiment", help="only this MLflow experiment")
    ls.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    ls.add_argument("--cluster", action="store_true",
                    help="jobs on a Ray cluster (Jobs API), each with its MLflow runs")
    ls.add_argument("--address", help="with --cluster: Jobs API address (default: RAY_ADDRESS, "
                                      "else `cluster local up`'s)")
    add_tracking(ls)


# ------------------------------------------------------------------------------- commands


def run_request(args: argparse.Namespace) -> RunRequest:
    """`runyard run`'s flags as the API's request (RunRequest.argv() turns it back)."""
    return RunRequest(args.spec, tuple(args.overrides), job_id=args.job_id, address=args.address,
                      num_cpus=args.num_cpus, tracking_uri=args.tracking_uri,
                      cluster_config=args.cluster_config, skip_preflight=args.skip_preflight,
                      storage=args.storage)


def continue_request(args: argparse.Namespace) -> ContinueRequest:
    """`runyard resume | rerun-failed | extend`'s flags as the API's request."""
    return ContinueRequest(args.job, args.command, samples=getattr(args, "samples", None),
                           address=args.address, num_cpus=args.num_cpus, storage=args.storage,
                           cluster_config=args.cluster_config)


def cmd_validate(args: argparse.Namespace) -> int:
    from runyard.spec import SpecError

    failures = 0
    for path in args.specs:
        try:
            planned = api.validate(path, args.overrides)
        except SpecError as error:
            failures += 1
            print(error, file=sys.stderr)
            continue
        spec, trials = planned.spec, len(planned.trials)
        print(f"ok  {path}: {spec.name} ({spec.workload}, {trials} trial"
              f"{'s' if trials != 1 else ''}, spec hash {spec.hash})")
        if args.show:
            import yaml

            print(yaml.safe_dump(spec.as_plain(), sort_keys=False))
    return EXIT_INVALID if failures else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    console = output.console()

    def show(report: api.PreflightReport) -> None:
        render_preflight(console, report)

    try:
        outcome = api.run(run_request(args), console=console, on_preflight=show)
    except api.PreflightFailed as failed:
        console.print(f"{failed} (see above)", highlight=False)
        return EXIT_FAILED
    print_outcome(console, outcome)
    return outcome.exit_code


def cmd_submit(args: argparse.Namespace) -> int:
    options = slurm_options(args)
    if options is not None:
        return _submit_to_slurm(args, options)
    submitted = api.submit(args.spec, args.overrides, address=args.address, job_id=args.job_id,
                           tracking_uri=args.tracking_uri, cluster_config=args.cluster_config,
                           storage=args.storage, max_upload_mb=args.max_upload_mb)
    trials = submitted.trials
    print(f"submitted {submitted.job_id}: {submitted.name} ({trials} trial{'s' if trials != 1 else ''}) "
          f"to {submitted.address}")
    print(f"shipped the project: {submitted.shipped}")
    if submitted.left_out:
        print(f"left behind: {', '.join(submitted.left_out)}")
    print(f"follow it: runyard logs {submitted.job_id} -f    status: runyard status {submitted.job_id}")
    return EXIT_OK


def _submit_to_slurm(args: argparse.Namespace, options) -> int:
    from runyard.api import slurm

    submitted = slurm.submit(args.spec, args.overrides, options=options, job_id=args.job_id,
                             tracking_uri=args.tracking_uri, storage=args.storage,
                             max_upload_mb=args.max_upload_mb)
    trials = submitted.trials
    print(f"submitted {submitted.job_id}: {submitted.name} ({trials} trial{'s' if trials != 1 else ''}) "
          f"to Slurm as job {submitted.slurm_job_id} on {options.nodes} node{'s' if options.nodes != 1 else ''}")
    print(f"snapshot of the project: {submitted.shipped}, in {submitted.folder}")
    print(f"its output: {submitted.job.output}    "
          f"queue: squeue -j {submitted.slurm_job_id}")
    return EXIT_OK


def cmd_preflight(args: argparse.Namespace) -> int:
    console = output.console()
    console.print(f"preflight of {args.spec} ...", highlight=False)
    report = api.preflight(args.spec, args.overrides, args.tracking_uri)
    render_preflight(console, report)
    return EXIT_OK if report.passed else EXIT_FAILED


def render_preflight(console: Console, report: api.PreflightReport) -> None:
    from rich.table import Table

    table = Table(title=f"preflight: {report.spec_name} ({report.workload})", title_justify="left",
                  header_style="bold")
    for column in ("check", "result", "measured", "expected", "explanation"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        verdict = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        table.add_row(check.name, verdict, f"{check.measured:.4g}", check.expected,
                      "" if check.passed else check.explanation)
    console.print(table)


def cmd_continue(args: argparse.Namespace) -> int:
    """resume, rerun-failed and extend: here, or (a Jobs API address) by a driver submitted
    to the cluster, which finds the job in the cluster's storage."""
    options = slurm_options(args) if args.command == "resume" else None
    if options is not None:
        from runyard.api import slurm

        resumed = slurm.resume(args.job, options=options, storage=args.storage)
        print(f"submitted the resume of {args.job} to Slurm as job {resumed.slurm_job_id} on "
              f"{options.nodes} node{'s' if options.nodes != 1 else ''}")
        print(f"its output: {resumed.output}    status: runyard status {args.job} --storage {args.storage or '$RUNYARD_STORAGE'}")
        return EXIT_OK
    request = continue_request(args)
    if api.is_jobs_url(request.address):
        submitted = api.continue_on_cluster(request)
        print(f"submitted {submitted.job_id}: {request.action} of {request.job} on "
              f"{submitted.address}")
        print(f"follow it: runyard logs {submitted.job_id} -f    status: runyard status "
              f"{submitted.job_id}")
        return EXIT_OK
    console = output.console()
    outcome = api.continue_job(request, console)
    print_outcome(console, outcome)
    return outcome.exit_code


def print_outcome(console: Console, outcome: api.JobOutcome) -> None:
    style = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow"}[outcome.status]
    console.print(f"[{style}]{outcome.status}[/]  job {outcome.job_id}  "
                  f"(MLflow run {outcome.run_id})", highlight=False)
    if outcome.best:
        best = outcome.best
        console.print(f"best: {outcome.metric}={best.value:.4g}{api.sweeps.spread(best)}  "
                      f"{best.label}  ({best.trial_id})", highlight=False)
    if outcome.failed_trials:
        console.print(f"failed trials: {', '.join(outcome.failed_trials)} (tracebacks: each "
                      f"run's error.txt); retry them: runyard rerun-failed {outcome.job_id}",
                      highlight=False)
    if outcome.not_started:
        console.print(f"the time budget ({outcome.time_budget_s:g} s) ran out: {outcome.not_started} trial(s) never started; "
                      f"add more with: runyard extend {outcome.job_id} --samples N",
                      highlight=False)
    if outcome.status == "KILLED":
        console.print(f"continue it: runyard resume {outcome.job_id}", highlight=False)
    console.print(f"see it: {outcome.link or 'runyard ui'}", highlight=False)


def cmd_ls(args: argparse.Namespace) -> int:
    from runyard.tracking.listing import recent_jobs, render_jobs
    from runyard.tracking.store import resolve_tracking_uri

    if args.cluster:
        return _ls_cluster(args)
    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    rows = recent_jobs(uri, args.experiment, args.limit)
    render_jobs(output.console(), rows, uri)
    return EXIT_OK


def _ls_cluster(args: argparse.Namespace) -> int:
    """Jobs the cluster knows, joined with the runs they wrote to the cluster's MLflow."""
    from rich.table import Table

    uri, jobs = api.cluster_jobs(args.address, args.tracking_uri, args.limit)
    table = Table(title="jobs on the cluster" + (f", runs in {uri}" if uri else
                                                 " (no tracking URI: give --tracking-uri)"),
                  title_justify="left", box=None, header_style="bold")
    for column in ("job id", "job status", "run status", "kind", "trials", "best", "MLflow run id"):
        table.add_column(column, no_wrap=True)
    for job in jobs:
        row = job.run
        table.add_row(job.job_id, job.status,
                      *(("", "", "", "", "") if row is None else
                        (row.status, row.kind, row.trials, row.best, row.run_id)))
    console = output.console()
    console.print(table if jobs else "no jobs on this cluster yet")
    return EXIT_OK

