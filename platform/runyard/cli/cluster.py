"""CLI: clusters (local and cloud), the tracking server, and jobs on a cluster.

    runyard cluster local up [--workers N] [--resources JSON]   a secured Ray cluster on this machine
    runyard cluster local up --hosts N                          ... each node its own host (root)
    runyard cluster local up --hosts N --slurm                  a Slurm cluster of N such hosts (root)
    runyard cluster local down | status
    runyard cluster up | down | status [--config cluster.yaml]  the cloud cluster (ray up/down)
    runyard tracking serve [--backend URI]                      basic-auth MLflow server (foreground)
    runyard status [JOB] | logs JOB [-f] | stop JOB             jobs on a cluster (Ray Jobs API)

`add_cluster_commands(subparsers)` adds these to the main argparse parser. Every subcommand
sets `func(args) -> int`: 0 ok, 2 invalid input (runyard.errors.UserError, message on stderr),
1 failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runyard.api import clusters, slurm
from runyard.cli.common import add_jobs_address, add_state_dir, add_storage
from runyard.errors import EXIT_FAILED, EXIT_OK, RunFailed, UserError
from runyard.processes import sigterm_as_interrupt
from runyard.paths import CLUSTER_STATE_DIR, TRACKING_STATE_DIR

STATE_DIR_HELP = f"where state, secrets and logs live (default {CLUSTER_STATE_DIR})"
DEFAULT_CLUSTER_CONFIG = "cluster.yaml"
_RAW = argparse.RawDescriptionHelpFormatter


def add_cluster_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_cluster(subparsers)
    _add_tracking(subparsers)
    _add_job_commands(subparsers)
    _add_warm_ray(subparsers)


# ---------------------------------------------------------------- runyard cluster ...


def _add_cluster(subparsers) -> None:
    cluster = subparsers.add_parser(
        "cluster",
        help="start/stop a Ray cluster: local (this machine) or cloud (cluster.yaml)",
        formatter_class=_RAW,
        description=(
            "Ray clusters for runyard jobs, secured by default: Ray token authentication on every\n"
            "node, the dashboard and MLflow reachable only through 127.0.0.1 / port forwarding.\n\n"
            "examples:\n"
            "  runyard cluster local up --workers 2          # try cluster jobs on your laptop\n"
            "  runyard cluster up                            # cloud GPU cluster from ./cluster.yaml\n"
            "  runyard cluster status\n"
            "  runyard cluster down\n"
        ),
    )
    verbs = cluster.add_subparsers(dest="cluster_command", metavar="{local,up,down,status}", required=True)

    local = verbs.add_parser(
        "local",
        help="a real multi-node Ray cluster on this machine (development, tests)",
        formatter_class=_RAW,
        description=(
            "A head node and N worker nodes on this machine, plus a basic-auth MLflow server.\n"
            "Workers carry custom resources that stand in for node types, so a spec asking for\n"
            "resources.custom: {gpu_node: 1} is placed as it would be on a GPU node.\n\n"
            "examples:\n"
            "  runyard cluster local up --workers 2\n"
            "  runyard cluster local up --resources '[{\"gpu_node\": 1}, {\"cpu_node\": 1}]' --workers 2\n"
            "  runyard cluster local status\n"
            "  runyard cluster local down\n"
        ),
    )
    local_verbs = local.add_subparsers(dest="local_command", metavar="{up,down,status}", required=True)
    up = local_verbs.add_parser(
        "up",
        help="start the local cluster",
        formatter_class=_RAW,
        description=(
            "Start Ray (token auth) and MLflow (basic-auth) on 127.0.0.1, on free ports.\n"
            "The Ray token is written 0600 to <state-dir>/auth_token and never printed; runyard\n"
            "status/logs/stop find it there. The MLflow admin is MLFLOW_TRACKING_USERNAME /\n"
            "MLFLOW_TRACKING_PASSWORD when set, else 'admin' with a random password kept 0600\n"
            "in <state-dir>/tracking_password. Jobs on the cluster log to this server and keep\n"
            "their state in --storage-dir (default .runyard/ here), which `down` keeps: `runyard\n"
            "best JOB` and `resume JOB` read it after the cluster is gone.\n\n"
            "--hosts N (root, Linux) runs N hosts instead -- the head and N-1 workers -- each\n"
            "with its own network namespace on a bridge in 198.18.0.0/15 (no route elsewhere),\n"
            "hostname, /tmp, home and processes, the checkout hidden, runyard installed on it\n"
            "from a wheel built now, and --storage-dir mounted at the same path on every host.\n"
            "This machine then reaches the cluster only through the Jobs API\n"
            "(http://<head>:8265) and MLflow (on the bridge), like a laptop. The head has\n"
            "0 CPUs by default, as in cluster.yaml: trials run on worker hosts.\n\n"
            "--hosts N --slurm (root, Linux; Debian's slurmctld, slurmd, slurm-client and munge)\n"
            "runs no Ray: N hosts n1..nN with a slurmd each, and munged and slurmctld here (the\n"
            "login node), configured in <state-dir>/slurm (nothing under /etc); export the\n"
            "SLURM_CONF that `up` prints and srun, sbatch, squeue and sinfo use this cluster.\n"
            "Each Slurm job starts its own Ray. MLflow listens on the bridge as with --hosts.\n\n"
            "examples:\n"
            "  runyard cluster local up\n"
            "  runyard cluster local up --workers 3 --resources '{\"gpu_node\": 1}'\n"
            "  sudo runyard cluster local up --hosts 3 --storage-dir /srv/runyard-storage\n"
            "  sudo runyard cluster local up --hosts 2 --slurm\n"
            "  runyard cluster local up --tracking-backend postgresql://mlflow:PW@127.0.0.1:5432/mlflow\n"
        ),
    )
    up.add_argument("--workers", type=int, default=None, help="worker nodes besides the head (default 2)")
    up.add_argument("--hosts", type=int, default=None, metavar="N",
                    help="N namespaced hosts in all: the head and N-1 workers (root only)")
    up.add_argument("--slurm", action="store_true",
                    help="with --hosts N: a Slurm cluster (slurmd on each host, slurmctld here) instead of Ray nodes")
    up.add_argument("--storage-dir", default=None, metavar="DIR",
                    help="where the cluster's jobs keep their ledgers and checkpoints, kept by `down` "
                    "(default: .runyard/ here; with --hosts <state-dir>/storage, which every host sees at the same path)")
    up.add_argument("--hosts-root", default=None, metavar="DIR",
                    help="with --hosts: where each host's private /tmp and home live (default /var/tmp/runyard-hosts)")
    up.add_argument(
        "--resources",
        default=None,
        metavar="JSON",
        help='custom resources per worker: one object for all ({"gpu_node": 1}, the default) or a list, one per worker',
    )
    up.add_argument("--head-cpus", type=int, default=None, help="logical CPUs of the head node (default 2; 0 with --hosts)")
    up.add_argument("--worker-cpus", type=int, default=1, help="logical CPUs of each worker (default 1)")
    up.add_argument("--tracking-backend", default=None, metavar="URI", help="MLflow backend (default SQLite in the state dir)")
    add_state_dir(up, STATE_DIR_HELP)
    up.set_defaults(func=_exit_codes(_local_up))

    down = local_verbs.add_parser(
        "down",
        help="stop everything `local up` started",
        formatter_class=_RAW,
        description=(
            "Stop exactly the processes recorded in <state-dir>/state.json (never `ray stop`,\n"
            "which would also stop other people's Ray on a shared machine).\n\n"
            "example:\n  runyard cluster local down\n"
        ),
    )
    add_state_dir(down, STATE_DIR_HELP)
    down.set_defaults(func=_exit_codes(_local_down))

    status = local_verbs.add_parser("status", help="addresses and live nodes of the local cluster")
    add_state_dir(status, STATE_DIR_HELP)
    status.set_defaults(func=_exit_codes(_local_status))

    for verb, ray_verb, text in (
        ("up", "up", "launch or update the cloud cluster (ray up)"),
        ("down", "down", "terminate the cloud cluster's nodes (ray down)"),
        ("status", "get-head-ip", "the head node's address and how to reach its dashboard"),
    ):
        command = verbs.add_parser(
            verb,
            help=text,
            formatter_class=_RAW,
            description=(
                f"{text[0].upper() + text[1:]}, from the Ray cluster launcher config.\n"
                "The dashboard (Jobs API) and MLflow listen only on the head node's localhost;\n"
                "`ray dashboard cluster.yaml` forwards 8265 to http://127.0.0.1:8265, and\n"
                "`ray attach cluster.yaml -p 5000` forwards MLflow.\n\n"
                "examples:\n"
                f"  runyard cluster {verb}\n"
                f"  runyard cluster {verb} --config configs/aws-us-west-2.yaml\n"
            ),
        )
        command.add_argument("--config", default=DEFAULT_CLUSTER_CONFIG, help="cluster launcher YAML (default ./cluster.yaml)")
        if verb in ("up", "down"):
            command.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        command.set_defaults(func=_exit_codes(functools.partial(_ray_launcher, ray_verb)))


def _local_up(args) -> int:
    clusters.local_up(
        workers=args.workers,
        hosts=args.hosts,
        slurm=args.slurm,
        storage_dir=args.storage_dir,
        **({"hosts_root": args.hosts_root} if args.hosts_root else {}),
        resources=_parse_resources(args.resources),
        state_dir=args.state_dir,
        head_cpus=args.head_cpus,
        worker_cpus=args.worker_cpus,
        tracking_backend=args.tracking_backend,
    )
    return EXIT_OK


def _local_down(args) -> int:
    clusters.local_down(args.state_dir)
    return EXIT_OK


def _local_status(args) -> int:
    status = clusters.local_status(args.state_dir)
    cluster = status.cluster
    if status.slurm_conf:
        print(f"Slurm commands:       export SLURM_CONF={status.slurm_conf}")
    else:
        print(f"Jobs API / dashboard: {cluster.jobs_address}")
    print(f"MLflow tracking URI:  {cluster.tracking_uri or '-'}")
    if not status.slurm_conf:
        print(f"Ray token file:       {cluster.token_path}")
    if status.alive is None:
        print(f"nodes: cannot reach the head ({status.unreachable})", file=sys.stderr)
        return EXIT_FAILED
    print(f"storage:              {cluster.storage_dir or '-'}")
    if cluster.network is not None:
        print(f"hosts on bridge:      {cluster.network.bridge} ({cluster.network.subnet})")
    print(f"nodes alive: {status.alive} of {len(cluster.nodes)}")
    for node in cluster.nodes:
        where = f" {node.address:15s}" if node.address else ""
        print(f"  {node.name:10s}{where} cpus={node.num_cpus} resources={json.dumps(node.resources)}")
    return EXIT_OK if status.whole else EXIT_FAILED


def _parse_resources(text: str | None):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f'--resources: not JSON ({error.msg}); e.g. --resources \'{{"gpu_node": 1}}\'.') from None
    if not isinstance(value, (dict, list)):
        raise UserError('--resources: expected a JSON object like {"gpu_node": 1} or a list of them.')
    return value


def _ray_launcher(ray_verb: str, args) -> int:
    config = Path(args.config)
    if not config.is_file():
        raise UserError(
            f"--config: {config} not found. runyard ships a commented cluster.yaml at the project "
            "root; copy it, set your region, bucket and key name, and pass it with --config."
        )
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    command = [ray, ray_verb, str(config)]
    if getattr(args, "yes", False):
        command.append("-y")
    completed = subprocess.run(command)
    if completed.returncode != 0:
        return EXIT_FAILED
    if ray_verb == "get-head-ip":
        print("dashboard / Jobs API: run `ray dashboard " + str(config) + "`, then use --address http://127.0.0.1:8265")
    return EXIT_OK


# ---------------------------------------------------------------- runyard tracking serve


def _add_tracking(subparsers) -> None:
    tracking = subparsers.add_parser(
        "tracking",
        help="the shared MLflow tracking server",
        formatter_class=_RAW,
        description="The MLflow tracking server runs jobs log to (basic-auth, allowed hosts).",
    )
    verbs = tracking.add_subparsers(dest="tracking_command", metavar="{serve}", required=True)
    serve = verbs.add_parser(
        "serve",
        help="run the basic-auth MLflow server in the foreground",
        formatter_class=_RAW,
        description=(
            "Run `mlflow server --app-name basic-auth` until Ctrl-C. The admin is\n"
            "MLFLOW_TRACKING_USERNAME (default admin) / MLFLOW_TRACKING_PASSWORD, which must be\n"
            "set, at least 12 characters, and not MLflow's old default 'password1234'.\n"
            "Clients use the same two variables. Binds 127.0.0.1 unless told otherwise; reach it\n"
            "from your laptop through SSH port forwarding rather than opening the port.\n\n"
            "examples:\n"
            "  export MLFLOW_TRACKING_PASSWORD=$(openssl rand -hex 16)\n"
            "  runyard tracking serve                                  # SQLite under .runyard/tracking\n"
            "  runyard tracking serve --backend postgresql://mlflow:PW@127.0.0.1:5432/mlflow \\\n"
            "                         --artifacts s3://my-lab-mlflow/artifacts --port 5000\n"
        ),
    )
    serve.add_argument(
        "--backend",
        default=os.environ.get("RUNYARD_TRACKING_BACKEND"),
        metavar="URI",
        help="sqlite:////abs/path.db or postgresql://... (default: $RUNYARD_TRACKING_BACKEND, which keeps "
        "a DB password off the command line, else SQLite in --state-dir)",
    )
    serve.add_argument("--artifacts", default=None, help="artifact store: a folder or s3://bucket/prefix (default <state-dir>/artifacts)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000; 0 picks a free one)")
    serve.add_argument("--allowed-hosts", default="", metavar="H1,H2", help="extra host[:port] names clients use (needed for a non-loopback --host)")
    serve.add_argument("--state-dir", default=str(TRACKING_STATE_DIR), help="auth config, logs and the default SQLite store")
    serve.set_defaults(func=_exit_codes(_tracking_serve))


def _tracking_serve(args) -> int:
    from runyard.tracking.server import serve

    state_dir = Path(args.state_dir).resolve()
    backend = args.backend or f"sqlite:///{state_dir / 'mlflow.db'}"
    artifacts = args.artifacts or str(state_dir / "artifacts")
    allowed = [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    server = serve(backend, artifacts, args.host, args.port, state_dir=state_dir, allowed_hosts=allowed)
    print(f"MLflow tracking server at {server.uri} (basic-auth); log: {server.log_path}")
    print("clients: export MLFLOW_TRACKING_URI=" + server.uri + " and the same MLFLOW_TRACKING_USERNAME/PASSWORD")
    # The server runs in its own process group; a SIGTERM to this command (kill, systemd, the
    # cluster's restart) must take it down too.
    try:
        with sigterm_as_interrupt():
            code = server.wait()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        server.stop()
    return EXIT_OK if code == 0 else EXIT_FAILED


# ---------------------------------------------------------------- runyard status / logs / stop


def _add_warm_ray(subparsers) -> None:
    warm = subparsers.add_parser(
        "ray",
        help="the Ray that `runyard run` keeps warm between runs (status, stop)",
        formatter_class=_RAW,
        description=(
            "A run without --address joins this user's warm Ray instead of starting and\n"
            "stopping a Ray of its own (~5 s saved a run). The first run starts it; it stops\n"
            "after RUNYARD_WARM_RAY_IDLE_S seconds without a run (default 600), or here.\n"
            "A run that starts while another uses it starts its own Ray, as before.\n"
            "RUNYARD_WARM_RAY=0 turns it off; RUNYARD_WARM_RAY_DIR moves its folder.\n\n"
            "examples:\n"
            "  runyard ray status\n"
            "  runyard ray stop          # e.g. to start the next run with a fresh Ray\n"
        ),
    )
    verbs = warm.add_subparsers(dest="ray_command", metavar="{status,stop}", required=True)
    verbs.add_parser("status", help="whether a warm Ray runs, where, and for how long idle"
                     ).set_defaults(func=_warm_status)
    verbs.add_parser("stop", help="stop the warm Ray now (refused while a run uses it)"
                     ).set_defaults(func=_warm_stop)


def _warm_status(args) -> int:
    import time

    warm = clusters.warm_ray()
    if warm is None:
        print("no warm Ray: the next `runyard run` starts one")
        return EXIT_OK
    cpus = "all CPUs" if warm.key.num_cpus is None else f"{warm.key.num_cpus} CPUs"
    print(f"warm Ray at {warm.address} (holder pid {warm.holder_pid}, {cpus}), up "
          f"{(time.time() - warm.started_at) / 60:.1f} min; it stops after {warm.idle_s:.0f} s "
          "without a run")
    return EXIT_OK


def _warm_stop(args) -> int:
    warm = clusters.stop_warm_ray()
    print("no warm Ray was running" if warm is None else f"stopped the warm Ray at {warm.address}")
    return EXIT_OK


def _add_job_commands(subparsers) -> None:
    status = subparsers.add_parser(
        "status",
        help="jobs on the cluster, or one job's details",
        formatter_class=_RAW,
        description=(
            "List the cluster's jobs (id, state, start, duration, entrypoint), or show one job\n"
            "(exit code 1 when that job FAILED, so scripts can wait on it).\n"
            "The Ray token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the local cluster's\n"
            "state dir or ~/.ray/auth_token.\n\n"
            "examples:\n"
            "  runyard status\n"
            "  runyard status raysubmit_AqiBy7SYEjj1Li8B\n"
            "  runyard status --address http://127.0.0.1:8265      # after `ray dashboard cluster.yaml`\n"
            "  runyard status JOB --storage /scratch/me/runyard      # a job submitted with --slurm\n"
        ),
    )
    status.add_argument("job", nargs="?", metavar="JOB", help="a job id (from `runyard status`)")
    add_jobs_address(status)
    add_state_dir(status)
    add_storage(status)
    status.set_defaults(func=_exit_codes(_status))

    logs = subparsers.add_parser(
        "logs",
        help="a job's driver output",
        formatter_class=_RAW,
        description=(
            "Print a job's driver output; -f follows it until the job ends (Ctrl-C detaches,\n"
            "the job keeps running).\n\n"
            "examples:\n"
            "  runyard logs raysubmit_AqiBy7SYEjj1Li8B\n"
            "  runyard logs raysubmit_AqiBy7SYEjj1Li8B -f\n"
        ),
    )
    logs.add_argument("job", metavar="JOB")
    logs.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    add_jobs_address(logs)
    add_state_dir(logs)
    add_storage(logs)
    logs.set_defaults(func=_exit_codes(_logs))

    stop = subparsers.add_parser(
        "stop",
        help="stop a running job",
        formatter_class=_RAW,
        description="Stop a job (its driver gets SIGTERM, then SIGKILL).\n\nexample:\n  runyard stop raysubmit_AqiBy7SYEjj1Li8B\n",
    )
    stop.add_argument("job", metavar="JOB")
    add_jobs_address(stop)
    add_state_dir(stop)
    add_storage(stop)
    stop.set_defaults(func=_exit_codes(_stop))


def _status(args) -> int:
    from runyard.tracking.redact import redact

    slurm_job = _slurm_job(args)
    if slurm_job is not None:
        seen = slurm.job_status(slurm_job)
        print(f"job:        {slurm_job.job_id} (Slurm job {slurm_job.slurm_job_id})")
        print(f"state:      {seen.state}   requeued: {seen.restarts} times")
        print(f"nodes:      {seen.nodes}   elapsed: {seen.elapsed}   limit: {seen.limit}")
        print(f"output:     {slurm_job.output}")
        return EXIT_FAILED if seen.state in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY") else EXIT_OK
    if args.job:
        info = clusters.job(args.job, args.address, state_dir=args.state_dir)
        print(f"job:        {info.submission_id}")
        print(f"status:     {info.status.value}")
        print(f"entrypoint: {info.entrypoint}")
        print(f"started:    {_when(info.start_time)}   ended: {_when(info.end_time)}   took: {_duration(info.start_time, info.end_time)}")
        if info.message:
            print(f"message:    {info.message}")
        env_vars = (info.runtime_env or {}).get("env_vars")
        if env_vars:
            print(f"env_vars:   {json.dumps(redact(env_vars))}")
        return EXIT_OK if str(info.status.value) != "FAILED" else EXIT_FAILED
    jobs = clusters.jobs(args.address, state_dir=args.state_dir)
    if not jobs:
        print("no jobs on this cluster yet")
        return EXIT_OK
    print(f"{'JOB':30s} {'STATUS':10s} {'STARTED':19s} {'TOOK':>8s}  ENTRYPOINT")
    for job in jobs:
        entrypoint = job.entrypoint if len(job.entrypoint) <= 60 else job.entrypoint[:57] + "..."
        print(f"{job.submission_id or job.job_id or '-':30s} {job.status.value:10s} {_when(job.start_time):19s} "
              f"{_duration(job.start_time, job.end_time):>8s}  {entrypoint}")
    return EXIT_OK


def _logs(args) -> int:
    slurm_job = _slurm_job(args)
    if slurm_job is not None:
        if args.follow:
            raise UserError(f"-f: a Slurm job's output is a file; follow it with `tail -f {slurm_job.output}`.")
        sys.stdout.write(slurm_job.output.read_text() if slurm_job.output.exists() else "")
        return EXIT_OK
    try:
        for chunk in clusters.job_logs(args.job, args.address, follow=args.follow, state_dir=args.state_dir):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"\n(detached; the job keeps running. `runyard stop {args.job}` stops it)", file=sys.stderr)
    return EXIT_OK


def _stop(args) -> int:
    slurm_job = _slurm_job(args)
    if slurm_job is not None:
        if slurm.stop(slurm_job):
            print(f"stop requested for {args.job} (scancel {slurm_job.slurm_job_id})")
        else:
            print(f"{args.job} had already finished")
        return EXIT_OK
    if clusters.stop(args.job, args.address, state_dir=args.state_dir):
        print(f"stop requested for {args.job}")
    else:
        print(f"{args.job} had already finished")
    return EXIT_OK


# ---------------------------------------------------------------- helpers


def _slurm_job(args):
    """The Slurm job `args.job` names, when it was submitted with --slurm and this storage
    (--storage or RUNYARD_STORAGE); None for a job on a Ray cluster."""
    return slurm.find(args.job, args.storage) if args.job else None


def _exit_codes(func):
    """A cluster that fails to start or answer (a node exits, a port is refused) is a failure
    to report in one line, exit 1, as runyard.cli.main reports runyard's own errors."""

    @functools.wraps(func)
    def run(args) -> int:
        try:
            return func(args)
        except (RuntimeError, OSError) as error:
            raise RunFailed(str(error)) from error

    return run


def _when(millis: int | None) -> str:
    if not millis:
        return "-"
    return dt.datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(start: int | None, end: int | None) -> str:
    if not start:
        return "-"
    seconds = ((end or dt.datetime.now().timestamp() * 1000) - start) / 1000
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f}m"
