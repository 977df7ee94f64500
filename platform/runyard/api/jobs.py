"""Jobs: validate, plan, preflight, run, submit, resume, rerun_failed, extend, explain.

Each function is one whole use of runyard, sequenced here and nowhere else: the CLI parses
flags, calls one of these and renders what it returns; the queue and a notebook call them
too. They print nothing of their own but the live progress of a running job (on `console`),
and raise UserError (bad input: nothing was started) or RunFailed (the work failed).

The executor and Ray are imported inside the functions that start work, so that `validate`
and `plan` stay fast (no Ray, no MLflow, no torch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.api.requests import ContinueRequest, RunRequest
from runyard.errors import RunFailed, UserError
from runyard.plan import Trial, check_feasible, cluster_config_nodes, expand
from runyard.plan.inputs import check_inputs
from runyard.processes import sigterm_as_interrupt
from runyard.spec import JobSpec, load_spec

if TYPE_CHECKING:
    from rich.console import Console

    from runyard.execute.explain import Explanation
    from runyard.execute.ledger import Ledger
    from runyard.execute.outcome import JobOutcome
    from runyard.execute.storage import Storage
    from runyard.launch import RaySession
    from runyard.tracking.listing import JobRow


@dataclass(frozen=True)
class Plan:
    """A valid spec and every trial it expands to."""

    path: str
    spec: JobSpec
    trials: list[Trial]
    capacity: list[dict[str, float]] = field(default_factory=list)  # node types a cluster config can start


@dataclass(frozen=True)
class PreflightReport:
    spec_name: str
    workload: str
    checks: list[Any]  # each with name, passed, measured, expected, explanation
    run_id: str  # the MLflow run that records them

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


class PreflightFailed(RunFailed):
    """A sweep was not started because its preflight failed."""

    def __init__(self, report: PreflightReport):
        super().__init__(f"the sweep did not start: a preflight check of {report.spec_name} "
                         "failed. Fix it, or start anyway with --skip-preflight.")
        self.report = report


@dataclass(frozen=True)
class Submission:
    job_id: str
    name: str  # the spec's name
    address: str  # the Jobs API it went to
    trials: int
    shipped: str  # what of the project travelled with the job: "N files, X MiB"
    left_out: tuple[str, ...]  # what a researcher may have expected to ship, and why not


# ------------------------------------------------------------------------ reading specs


def validate(path: str | Path, overrides: Sequence[str] = ()) -> Plan:
    """The spec at `path` after `extends:` and `overrides`, with its trials; SpecError (a
    UserError) lists every problem. Checks nothing about this machine."""
    spec = load_spec(path, list(overrides))
    return Plan(str(path), spec, expand(spec))


def plan(path: str | Path, overrides: Sequence[str] = (), cluster_config: str | None = None) -> Plan:
    """`validate`, then the inputs on this machine (data paths), and the node types that
    `cluster_config` can start (the plan's capacity, which `run` adds to the live nodes)."""
    planned = validate(path, overrides)
    check_inputs(planned.spec, str(path))
    capacity = cluster_config_nodes(cluster_config) if cluster_config else []
    return Plan(planned.path, planned.spec, planned.trials, capacity)


# ---------------------------------------------------------------------------- preflight


def preflight(path: str | Path, overrides: Sequence[str] = (), tracking_uri: str | None = None
              ) -> PreflightReport:
    """The Recipe's checks on the spec's model and data, recorded as an MLflow run."""
    from runyard.execute.preflight import has_preflight
    from runyard.tracking.store import resolve_tracking_uri

    planned = plan(path, overrides)
    if not has_preflight(planned.spec):
        raise UserError(f"{planned.spec.workload} has no preflight checks (the supervised "
                        "workloads sl.linear and sl.convnet have them)")
    return _preflight(planned.spec, resolve_tracking_uri(tracking_uri, Path.cwd()))


def _preflight(spec: JobSpec, uri: str, as_trial: bool = False) -> PreflightReport:
    """The checks, in this process or (`as_trial`, inside a driver) in a Ray task of one
    trial's size; recorded as an MLflow run."""
    from runyard.execute.preflight import run_preflight, run_preflight_as_trial
    from runyard.tracking.preflight import record_preflight

    checks = run_preflight_as_trial(spec) if as_trial else run_preflight(spec)
    run_id = record_preflight(uri, spec, checks)
    return PreflightReport(spec.name, spec.workload, checks, run_id)


# ---------------------------------------------------------------------------- run a job


def run(spec: str | Path | RunRequest, overrides: Sequence[str] = (), *,
        console: Console | None = None,
        on_preflight: Callable[[PreflightReport], None] | None = None,
        **options: Any) -> JobOutcome:
    """Run a job or a sweep to its end and return how it ended.

    `spec` is a spec file (then `overrides` and `options` are RunRequest's fields: job_id,
    address, num_cpus, tracking_uri, cluster_config, skip_preflight) or a RunRequest.
    A sweep of a workload with preflight checks runs them first (`on_preflight` sees the
    report) and raises PreflightFailed without starting when one fails."""
    from runyard.execute.job import run_job
    from runyard.execute.preflight import has_preflight
    from runyard.execute.storage import Storage
    from runyard.tracking.store import resolve_tracking_uri

    request = spec if isinstance(spec, RunRequest) else RunRequest(
        str(spec), tuple(overrides), **options)
    refuse_jobs_url(request.address, "run", "runyard submit SPEC --address URL")
    planned = plan(request.spec, request.overrides, request.cluster_config)
    job = planned.spec
    workdir = Path.cwd()
    uri = resolve_tracking_uri(request.tracking_uri, workdir)
    storage = Storage.resolve(request.storage, workdir)
    with _driver(request.address, request.num_cpus, job, storage) as session:
        check_feasible(job, planned.trials, session.nodes + planned.capacity)
        if job.sweep is not None and not request.skip_preflight and has_preflight(job):
            report = _preflight(job, uri, as_trial=True)
            if on_preflight is not None:
                on_preflight(report)
            if not report.passed:
                raise PreflightFailed(report)
        return run_job(job, planned.trials, uri, workdir, _console(console), storage,
                       job_id=request.job_id, spec_path=Path(request.spec))


def resume(job: str, *, console: Console | None = None, **options: Any) -> JobOutcome:
    """Continue a job whose driver died: every unfinished trial from its last checkpoint,
    in the MLflow runs it already has. `options`: ContinueRequest's address, num_cpus,
    storage."""
    return continue_job(ContinueRequest(job, "resume", **options), console)


def rerun_failed(job: str, *, console: Console | None = None, **options: Any) -> JobOutcome:
    """Run again only the trials of a job that failed, each in its own run."""
    return continue_job(ContinueRequest(job, "rerun-failed", **options), console)


def extend(job: str, samples: int, *, console: Console | None = None, **options: Any) -> JobOutcome:
    """Add `samples` configs to a sweep, under the same parent run."""
    return continue_job(ContinueRequest(job, "extend", samples=samples, **options), console)


def continue_job(request: ContinueRequest, console: Console | None = None) -> JobOutcome:
    """resume, rerun-failed or extend, with this process as the job's driver (joining the
    cluster at a GCS address, or on an embedded Ray). A job that ran on a cluster is
    continued there instead, from its storage: `continue_on_cluster`."""
    from runyard.execute.job import extend_job, resume_job
    from runyard.execute.planned import load_ledger_spec
    from runyard.tracking.reconcile import reconcile
    from runyard.tracking.store import client_for

    _check_samples(request)
    refuse_jobs_url(request.address, request.action, "runyard.api.continue_on_cluster")
    ledger = find_job(request.job, request.storage)
    spec = load_ledger_spec(ledger)
    # What `run` checked on its machine may be gone or elsewhere here (a deleted dataset, a
    # driver on another node): refused before any trial starts, as a new job would be.
    check_inputs(spec, f"{ledger.sweep_id} (spec {ledger.spec_path or ledger.path})")
    reconcile(client_for(ledger.tracking_uri))
    capacity = cluster_config_nodes(request.cluster_config) if request.cluster_config else []
    with _driver(request.address, request.num_cpus, spec, _storage_of(ledger)) as session:
        check_feasible(spec, expand(spec), session.nodes + capacity)
        if request.action == "extend":
            return extend_job(ledger, request.samples, _console(console))
        return resume_job(ledger, _console(console), errored_only=request.action == "rerun-failed")


def continue_on_cluster(request: ContinueRequest) -> Submission:
    """resume, rerun-failed or extend a job that ran on a cluster, from the laptop: a new
    driver is submitted through the Jobs API at `request.address`; it finds the job's ledger
    and Tune state in the cluster's storage (the laptop needs no access to it) and goes on
    in the same MLflow runs."""
    _check_samples(request)
    config = request.cluster_config
    driver = ContinueRequest(request.job, request.action, samples=request.samples,
                             storage=request.storage,
                             cluster_config=str(in_project(config, Path.cwd().resolve())) if config else None)
    job_id = f"{request.job}-{request.action}-{time.strftime('%H%M%S')}"
    return _submit_driver(driver.argv(), request.address, job_id, request.job,
                          {"runyard_continues": request.job}, request.storage)


def _check_samples(request: ContinueRequest) -> None:
    if request.action == "extend" and (request.samples is None or request.samples < 1):
        raise UserError("--samples must be at least 1")


def find_job(key: str, storage: str | None = None) -> Ledger:
    """The job whose id or MLflow run id is `key`, from the ledgers in `storage` (default:
    RUNYARD_STORAGE, else this working dir's .runyard/)."""
    from runyard.execute.ledger import Ledger
    from runyard.execute.storage import Storage

    return Ledger.find(Storage.resolve(storage, Path.cwd()), key)


def _storage_of(ledger: Ledger) -> Storage:
    from runyard.execute.storage import Storage

    return Storage(ledger.storage)


def is_jobs_url(address: str | None) -> bool:
    """--address names a cluster either by its Jobs API (http://host:8265), where a driver is
    submitted to run, or by its GCS (host:6379), which this process joins as the driver."""
    return bool(address) and address.startswith(("http://", "https://"))


def refuse_jobs_url(address: str | None, command: str, instead: str) -> None:
    if is_jobs_url(address):
        raise UserError(f"--address {address} is a Jobs API URL: `{command}` joins a cluster as "
                        f"its driver and needs its GCS address (host:6379); to run the driver on "
                        f"the cluster, use {instead}")


def explain(job: str, address: str | None = None, storage: str | None = None) -> Explanation:
    """Why a job's trials are pending (see runyard.execute.explain)."""
    import os

    from runyard.execute.explain import explain as explain_job
    from runyard.execute.planned import load_ledger_spec

    ledger = find_job(job, storage)
    return explain_job(ledger, load_ledger_spec(ledger),
                       address or os.environ.get("RAY_ADDRESS") or None)


# ----------------------------------------------------------------------------- clusters


def submit(spec: str | Path, overrides: Sequence[str] = (), *, address: str | None = None,
           job_id: str | None = None, tracking_uri: str | None = None,
           cluster_config: str | None = None, storage: str | None = None,
           max_upload_mb: float | None = None) -> Submission:
    """Plan the job here, then run it on a Ray cluster through the Jobs API: the project
    travels as the job's working dir, this runyard travels with it (so the driver and every
    trial run the code that was submitted, not what a node has installed), and `runyard run`
    is its driver on the head node. `storage` is where its state lives on the cluster
    (default: the cluster's RUNYARD_STORAGE). A project over `max_upload_mb` (default 100)
    is refused before anything is submitted."""
    from runyard.execute.planned import new_job_id

    if address and not is_jobs_url(address):
        raise UserError(f"--address {address}: submit talks to the cluster's Jobs API; give its "
                        "URL, e.g. http://HEAD:8265 (host:port alone is a GCS address)")
    planned = validate(spec, overrides)
    project = Path.cwd().resolve()
    relative = in_project(spec, project)
    if cluster_config is not None:
        # Refused here, before anything is submitted; the driver checks again, live nodes
        # and node types together, once it runs on the cluster.
        check_feasible(planned.spec, planned.trials, cluster_config_nodes(cluster_config))
    job_id = job_id or new_job_id(planned.spec)
    driver = RunRequest(
        str(relative), tuple(overrides), job_id=job_id, tracking_uri=tracking_uri,
        cluster_config=str(in_project(cluster_config, project)) if cluster_config else None,
        storage=storage)
    submitted = _submit_driver(driver.argv(), address, job_id, planned.spec.name,
                               {"runyard_spec": str(relative),
                                "runyard_trials": str(len(planned.trials))}, storage,
                               max_upload_mb)
    return Submission(job_id, planned.spec.name, submitted.address, len(planned.trials),
                      submitted.shipped, submitted.left_out)


def _submit_driver(argv: list[str], address: str | None, job_id: str, name: str,
                   metadata: dict[str, str], storage: str | None,
                   max_upload_mb: float | None = None) -> Submission:
    """`runyard ARGV` as a job's driver on the cluster, with the project and this runyard,
    and what this environment knows about reaching `storage` (a bucket's endpoint and
    credentials), which the driver and every trial process of the job get in their env."""
    import shlex

    import runyard
    from runyard.execute.records import SUBMISSION_ENV
    from runyard.execute.storage import check_no_credentials, client_env
    from runyard.launch import jobs_api

    if storage:  # refused here, before it is on the cluster's job list
        check_no_credentials(storage)
    env = {
        **client_env(storage),
        # `runyard stop` sends the driver SIGTERM; it then needs a few seconds to end its
        # runs KILLED and flush their metrics before Ray's default 3 s grace turns into SIGKILL.
        "RAY_JOB_STOP_WAIT_TIME_S": "30",
        # The driver tags its runs with its submission id, by which the laptop judges them.
        SUBMISSION_ENV: job_id,
    }
    entrypoint = shlex.join(["python", "-m", "runyard.cli.main", *argv])
    limit = {} if max_upload_mb is None else {"max_upload_mb": max_upload_mb}
    submitted = jobs_api.submit(entrypoint, address, Path.cwd().resolve(), env,
                                py_modules=(Path(runyard.__file__).parent,),
                                submission_id=job_id, metadata=metadata, **limit)
    shipped = submitted.shipped
    left_out = ([f"{path} (a Python environment)" for path in shipped.environments] +
                [f"{path} (over the per-file limit)" for path in shipped.large_files])
    return Submission(job_id, name, submitted.address, 0, shipped.summary(), tuple(left_out))


@dataclass(frozen=True)
class ClusterJob:
    job_id: str  # the submission id, which is the runyard job id
    status: str  # as the Jobs API says it
    run: JobRow | None  # the job's run in the cluster's MLflow, when found


def cluster_jobs(address: str | None = None, tracking_uri: str | None = None, limit: int = 20
                 ) -> tuple[str | None, list[ClusterJob]]:
    """The last `limit` jobs the cluster knows, newest first, each with the MLflow run it
    wrote; and the tracking URI read (None when there is none to read: give one)."""
    import os

    from runyard.launch import jobs_api, local_cluster
    from runyard.tracking.listing import job_runs
    from runyard.tracking.reconcile import reconcile
    from runyard.tracking.store import client_for

    known = jobs_api.list_jobs(address)
    jobs = known[-limit:]
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    credentials: dict[str, str] = {}
    state = Path(local_cluster.DEFAULT_STATE_DIR)
    if uri is None and (state / local_cluster.STATE_FILE).exists():
        # The local cluster's server takes basic auth; MLflow reads it from the environment.
        credentials = local_cluster.LocalCluster.load(state).tracking_env()
        uri = credentials.pop("MLFLOW_TRACKING_URI", None)
    ids = [job.submission_id for job in jobs if job.submission_id]
    states = {job.submission_id: (job.status.value, job.message or "") for job in known}
    with _environment(credentials):
        if uri:  # runs whose driver job died stay RUNNING until someone asks the Jobs API
            reconcile(client_for(uri), job_state=states.get)
        runs = job_runs(uri, ids) if uri else {}
    return uri, [ClusterJob(job.submission_id or job.job_id or "-", job.status.value,
                            runs.get(job.submission_id)) for job in reversed(jobs)]


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ within the block only (set where not set already)."""
    import os

    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def in_project(path: str | Path, project: Path) -> Path:
    """`path` relative to the project folder, which is all that travels to the cluster."""
    try:
        return Path(path).resolve().relative_to(project)
    except ValueError:
        raise UserError(f"{path} is outside this project ({project}); only the project "
                        "travels to the cluster: move it under the project") from None


# -------------------------------------------------------------------------- the driver


@contextmanager
def _driver(address: str | None, num_cpus: int | None, spec: JobSpec, storage: Storage
            ) -> Iterator[RaySession]:
    """This process as a job's driver: connected to Ray, its storage writable from every
    node, and ending its runs KILLED on SIGTERM as on Ctrl-C."""
    from runyard.execute.storage import check_every_node_shares, check_writable
    from runyard.launch import ray_session

    check_writable(storage)
    with ray_session(address, num_cpus=num_cpus, dashboard=spec.resources.workers > 1) as session:
        if not session.embedded:
            check_every_node_shares(storage)
        with sigterm_as_interrupt():  # after ray.init, which installs a SIGTERM handler of its own
            yield session


def _console(console: Console | None) -> Console:
    if console is not None:
        return console
    from rich.console import Console

    return Console()
