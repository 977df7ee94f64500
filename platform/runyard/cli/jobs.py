"""Commands that start, continue and list jobs: validate, run, resume, rerun-failed, extend,
ls."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from runyard.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, UserError
from runyard.plan.preflight import has_preflight, run_preflight

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
  runyard submit jobs/imagenet_convnet.yaml --cluster-config cluster.yaml   # autoscaling

The spec is validated and planned here first; with --cluster-config, every trial's request
is also checked against the node types the cluster can grow to, so a request none of them
can hold fails here, in seconds, before anything is submitted. Then then the project (minus .runyard/, .venv/,
data/ and large files) travels as the job's working dir and `runyard run SPEC` runs as its
driver on the head node, tracking into the cluster's MLflow server. The token comes from
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token and is never printed.
"""

EPILOG_RESUME = """\
examples:
  runyard resume digits-linear-sweep-20261123-030516
  runyard resume 1fd447c0a1b04c80963c4db66bbf207f        # the sweep's MLflow run id

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
    add_cluster_config(submit)

    resume = commands.add("resume", "continue a job whose driver died", EPILOG_RESUME, cmd_resume)
    resume.add_argument("job", metavar="JOB", help="job id, or its MLflow run id")
    add_cluster(resume)

    rerun = commands.add("rerun-failed", "run again only the trials of a job that failed",
                         "examples:\n  runyard rerun-failed digits-linear-sweep-20261123-030516\n\n"
                         "Each failed trial continues from its last checkpoint (or starts over "
                         "if it had none)\nin the MLflow run it already has; nothing else runs.\n",
                         cmd_rerun_failed)
    rerun.add_argument("job", metavar="JOB", help="job id, or its MLflow run id")
    add_cluster(rerun)

    extend = commands.add("extend", "add trials to a finished sweep, under the same parent run",
                          "examples:\n  runyard extend digits-linear-sweep-20261123-030516 "
                          "--samples 16\n\nNew configs are drawn after the existing ones: "
                          "the sweep's first trials never change.\n", cmd_extend)
    extend.add_argument("job", metavar="SWEEP", help="sweep id, or its MLflow parent run id")
    extend.add_argument("--samples", type=int, required=True, help="configs to add")
    add_cluster(extend)

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


def add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a spec field by dotted key, e.g. --set config.lr=3e-4 "
                             "(repeatable; values are read as YAML)")


def add_tracking(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                                               "MLFLOW_TRACKING_URI, else .runyard/mlflow.db)")


def add_cluster_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-config", metavar="YAML",
                        help="a Ray cluster launcher config (e.g. cluster.yaml): check trials "
                             "against the node types it can start too, not only live nodes")


def add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, "
                                          "else start an embedded Ray in this process)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    add_tracking(parser)


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


def stop_on_sigterm() -> None:
    """`runyard stop`, the Jobs API and schedulers end a driver with SIGTERM: treat it like
    Ctrl-C, so the job's runs end KILLED instead of staying RUNNING."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cmd_run(args: argparse.Namespace) -> int:
    from runyard.execute.job import run_job
    from runyard.launch import ray_session
    from runyard.plan import check_feasible, cluster_config_nodes, expand
    from runyard.spec import load_spec
    from runyard.tracking.store import resolve_tracking_uri

    spec = load_spec(args.spec, args.overrides)
    trials = expand(spec)
    _check_inputs(spec, args.spec)
    growth = cluster_config_nodes(args.cluster_config) if args.cluster_config else []
    workdir = Path.cwd()
    uri = resolve_tracking_uri(args.tracking_uri, workdir)
    console = Console()
    with ray_session(args.address, num_cpus=args.num_cpus,
                     dashboard=spec.resources.workers > 1) as session:
        stop_on_sigterm()  # after ray.init, which installs a SIGTERM handler of its own
        check_feasible(spec, trials, session.nodes + growth)
        if spec.sweep is not None and not args.skip_preflight and has_preflight(spec):
            if not preflight_passes(spec, uri, console):
                console.print("the sweep did not start: a preflight check failed (see above). "
                              "Fix it, or start anyway with --skip-preflight.", highlight=False)
                return EXIT_FAILED
        outcome = run_job(spec, trials, uri, workdir, console, job_id=args.job_id,
                          spec_path=Path(args.spec))
    print_outcome(console, spec, outcome)
    return outcome.exit_code


def cmd_submit(args: argparse.Namespace) -> int:
    import shlex

    from runyard.execute.job import new_job_id
    from runyard.launch import jobs_api
    from runyard.plan import check_feasible, cluster_config_nodes, expand
    from runyard.spec import load_spec

    spec = load_spec(args.spec, args.overrides)
    trials = expand(spec)
    project = Path.cwd().resolve()
    relative = _in_project(args.spec, project)
    job_id = args.job_id or new_job_id(spec)
    command = ["runyard", "run", str(relative), "--id", job_id]
    command += [item for o in args.overrides for item in ("--set", o)]
    if args.tracking_uri:
        command += ["--tracking-uri", args.tracking_uri]
    if args.cluster_config:
        # Refused here, before anything is submitted; the driver checks again, live nodes
        # and node types together, once it runs on the cluster.
        check_feasible(spec, trials, cluster_config_nodes(args.cluster_config))
        command += ["--cluster-config", str(_in_project(args.cluster_config, project))]
    # `runyard stop` sends the driver SIGTERM; it then needs a few seconds to end its runs
    # KILLED and flush their metrics before Ray's default 3 s grace turns into SIGKILL.
    grace = {"RAY_JOB_STOP_WAIT_TIME_S": "30"}
    submitted = jobs_api.submit(shlex.join(command), args.address, project, grace,
                                submission_id=job_id,
                                metadata={"runyard_spec": str(relative), "runyard_trials": str(len(trials))})
    print(f"submitted {job_id}: {spec.name} ({len(trials)} trial{'s' if len(trials) != 1 else ''}) "
          f"to {submitted.address}")
    if submitted.skipped_large_files:
        print(f"left behind (over the size limit): {', '.join(submitted.skipped_large_files)}")
    print(f"follow it: runyard logs {job_id} -f    status: runyard status {job_id}")
    return EXIT_OK


def _in_project(path: str, project: Path) -> Path:
    """`path` relative to the project folder, which is all that travels to the cluster."""
    try:
        return Path(path).resolve().relative_to(project)
    except ValueError:
        raise UserError(f"{path} is outside this project ({project}); only the project "
                        "travels to the cluster: move it under the project") from None


def cmd_preflight(args: argparse.Namespace) -> int:
    from runyard.spec import load_spec
    from runyard.tracking.store import resolve_tracking_uri

    spec = load_spec(args.spec, args.overrides)
    if not has_preflight(spec):
        raise UserError(f"{spec.workload} has no preflight checks (the supervised workloads "
                        "sl.linear and sl.convnet have them)")
    _check_inputs(spec, args.spec)
    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    return EXIT_OK if preflight_passes(spec, uri, Console()) else EXIT_FAILED


def preflight_passes(spec, uri: str, console: Console) -> bool:
    """Run the spec's preflight, show it as a table, record it as an MLflow run."""
    from rich.table import Table

    from runyard.tracking.store import JobTracking

    console.print(f"preflight of {spec.name} ({spec.workload}) ...", highlight=False)
    results = run_preflight(spec)
    table = Table(title=f"preflight: {spec.name}", title_justify="left", header_style="bold")
    for column in ("check", "result", "measured", "expected", "explanation"):
        table.add_column(column, overflow="fold")
    for check in results:
        verdict = "[green]pass[/]" if check.passed else "[red]FAIL[/]"
        table.add_row(check.name, verdict, f"{check.measured:.4g}", check.expected,
                      "" if check.passed else check.explanation)
    console.print(table)
    passed = all(check.passed for check in results)
    tracking = JobTracking(uri, spec.experiment)
    run = tracking.start_run(f"{spec.name}-preflight",
                             {"runyard.kind": "preflight", "runyard.spec_name": spec.name,
                              "runyard.spec_hash": spec.hash, "runyard.workload": spec.workload},
                             {"workload": spec.workload})
    tracking.writer.log_metrics(run, {f"preflight_{c.name}": c.measured for c in results}, step=0)
    tracking.writer.set_tags(run, {f"runyard.preflight.{c.name}": "pass" if c.passed else "FAIL"
                                   for c in results})
    report = "\n".join(f"{c.name}\t{'pass' if c.passed else 'FAIL'}\t{c.measured:.6g}\t"
                       f"{c.expected}\t{c.explanation}" for c in results)
    tracking.writer.log_text(run, "check\tresult\tmeasured\texpected\texplanation\n" + report,
                             "preflight.tsv")
    tracking.writer.end_run(run, "FINISHED" if passed else "FAILED")
    tracking.close()
    return passed


def _check_inputs(spec, spec_path: str) -> None:
    from runyard import workloads
    from runyard.spec import workload_context

    workload_cls = workloads.get(spec.workload)
    config = workload_cls.Config.model_validate(spec.config)
    problems = workload_cls.check_inputs(config, workload_context(spec))
    if problems:
        raise UserError(f"{spec_path}: cannot run here:\n" + "\n".join(f"  {p}" for p in problems))


def _continue(args: argparse.Namespace, action: str) -> int:
    """resume, rerun-failed and extend: find the job, reconcile, rejoin Ray, go on."""
    from runyard.execute.job import extend_job, load_ledger_spec, resume_job
    from runyard.execute.ledger import Ledger
    from runyard.launch import ray_session
    from runyard.plan import check_feasible, expand
    from runyard.tracking.reconcile import reconcile
    from runyard.tracking.store import client_for

    ledger = Ledger.find(Path.cwd(), args.job)
    spec = load_ledger_spec(ledger)
    if action == "extend" and args.samples < 1:
        raise UserError("--samples must be at least 1")
    reconcile(client_for(ledger.tracking_uri))
    console = Console()
    with ray_session(args.address, num_cpus=args.num_cpus,
                     dashboard=spec.resources.workers > 1) as session:
        stop_on_sigterm()  # after ray.init, which installs a SIGTERM handler of its own
        check_feasible(spec, expand(spec), session.nodes)
        if action == "extend":
            outcome = extend_job(ledger, args.samples, console)
        else:
            outcome = resume_job(ledger, console, errored_only=(action == "rerun-failed"))
    print_outcome(console, spec, outcome)
    return outcome.exit_code


def cmd_resume(args: argparse.Namespace) -> int:
    return _continue(args, "resume")


def cmd_rerun_failed(args: argparse.Namespace) -> int:
    return _continue(args, "rerun-failed")


def cmd_extend(args: argparse.Namespace) -> int:
    return _continue(args, "extend")


def print_outcome(console: Console, spec, outcome) -> None:
    style = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow"}[outcome.status]
    console.print(f"[{style}]{outcome.status}[/]  job {outcome.sweep_id}  "
                  f"(MLflow run {outcome.run_id})", highlight=False)
    if outcome.best:
        best = outcome.best
        spread = f" ± {best['std']:.3g} over {best['seeds']} seeds" if best["seeds"] > 1 else ""
        console.print(f"best: {spec.sweep.metric}={best['value']:.4g}{spread}  "
                      f"{best['label']}  ({best['trial_id']})", highlight=False)
    if outcome.failed_trials:
        console.print(f"failed trials: {', '.join(outcome.failed_trials)} (tracebacks: each "
                      f"run's error.txt); retry them: runyard rerun-failed {outcome.sweep_id}",
                      highlight=False)
    if outcome.not_started:
        console.print(f"the time budget ({spec.sweep.time_budget_s:g} s) ran out: "
                      f"{outcome.not_started} trial(s) never started; add more with: "
                      f"runyard extend {outcome.sweep_id} --samples N", highlight=False)
    if outcome.status == "KILLED":
        console.print(f"continue it: runyard resume {outcome.sweep_id}", highlight=False)
    console.print("see it: runyard ui", highlight=False)


def cmd_ls(args: argparse.Namespace) -> int:
    from runyard.tracking.listing import recent_jobs, render_jobs
    from runyard.tracking.store import resolve_tracking_uri

    if args.cluster:
        return _ls_cluster(args)
    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    rows = recent_jobs(uri, args.experiment, args.limit)
    render_jobs(Console(), rows, uri)
    return EXIT_OK


def _ls_cluster(args: argparse.Namespace) -> int:
    """Jobs the cluster knows, joined with the runs they wrote to the cluster's MLflow."""
    import os

    from rich.table import Table

    from runyard.launch import jobs_api, local_cluster
    from runyard.tracking.listing import job_runs

    jobs = jobs_api.list_jobs(args.address)[-args.limit:]
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    state = Path(local_cluster.DEFAULT_STATE_DIR)
    if uri is None and (state / local_cluster.STATE_FILE).exists():
        cluster = local_cluster.LocalCluster.load(state)
        uri = cluster.tracking_uri or None
        if uri:  # this process only: the credentials of the local cluster's server
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", cluster.tracking_username)
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD",
                                  Path(cluster.tracking_password_path).read_text().strip())
    runs = job_runs(uri, [job.submission_id for job in jobs if job.submission_id]) if uri else {}
    table = Table(title="jobs on the cluster" + (f", runs in {uri}" if uri else
                                                 " (no tracking URI: give --tracking-uri)"),
                  title_justify="left", box=None, header_style="bold")
    for column in ("job id", "job status", "run status", "kind", "trials", "best", "MLflow run id"):
        table.add_column(column, no_wrap=True)
    for job in reversed(jobs):
        row = runs.get(job.submission_id)
        table.add_row(job.submission_id or job.job_id or "-", job.status.value,
                      *(("", "", "", "", "") if row is None else
                        (row.status, row.kind, row.trials, row.best, row.run_id)))
    console = Console() if Console().is_terminal else Console(width=240)
    console.print(table if jobs else "no jobs on this cluster yet")
    return EXIT_OK

