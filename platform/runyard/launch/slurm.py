"""runyard jobs on a Slurm cluster: one batch script per job, which starts a Ray of its own on
the nodes Slurm gave it, runs the runyard driver against it and stops exactly that Ray.

On the login node (`submit`): the job's folder <storage>/slurm-jobs/<job id> gets a snapshot
of the project and of runyard (an edit after submitting changes nothing of the running job),
a Ray token only the user can read, and the batch script; `sbatch` queues it. The tracking
server's URI and credentials travel in the environment sbatch exports, never in the script.

On the nodes, the batch script (it runs on the first node) starts `python -m
runyard.launch.slurm head` there and `... worker` on every other node, one `srun` step each.
Each of them picks free ports on its own node (nothing a second job on the same node could
hold), gives Ray a temp dir of the job's own, and keeps `ray start --block` in a process
group of its own; the head publishes its GCS address in the job's folder, the workers read it
there. Once every node has joined, the driver runs. At the end the script writes a stop file;
each node's runner sees it and stops its own Ray's process group -- never `ray stop`, which
would end every job's Ray on that node. `runyard stop` signals the batch script alone, which
hands SIGTERM to the driver (its runs end KILLED, resumable) before stopping the Ray; `resume`
sbatches the same folder again with a driver that continues the job. If the job is cancelled
outright or runs out of time, Slurm ends the steps, and with them these process groups.

Wall time: the script asks Slurm for SIGUSR1 `stop_lead_s` before the job's end (`--signal=B:`,
to the batch shell alone). On it the script stops the driver as `runyard stop` does (runs KILLED,
Tune's state and the checkpoints in the storage), stops its Ray, and requeues the job
(`scontrol requeue`, the job is submitted with `--requeue`): the same Slurm job id runs the
script again from the top in a new allocation, and since the job's ledger now exists, its driver
is `runyard resume`, which finishes the sweep in the same MLflow runs. A `runyard stop` stays a
plain stop: it sends SIGTERM, not SIGUSR1, and the script requeues only on the latter.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runyard.errors import UserError
from runyard.launch.process_nodes import NODE_PORTS, node_port_flags, free_ports
from runyard.processes import group_alive, start_group, stop_group, wait_until, write_private

JOBS_FOLDER = "slurm-jobs"  # under the job's storage
# Per allocation (suffixed with Slurm's job id and its restart count, ALLOCATION_ENV): a resumed
# or requeued job's new allocation must never read the address of the last one's head, nor its
# stop file.
HEAD_ADDRESS_FILE = "head_address"
STOP_FILE = "stop"
TOKEN_FILE = "ray_token"
JOIN_TIMEOUT_S = 180.0
ACTIVE_STATES = ("PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED")  # Slurm still holds the job
RAY_STOP_GRACE_S = 5.0
ALLOCATION_ENV = "RUNYARD_SLURM_ALLOCATION"  # <Slurm job id>.<restarts>, set by the batch script
# Time to stop a sweep resumably before the wall time: the driver hands SIGTERM to Tune, which
# writes its state and ends the trials; a minute is ample for toy trials, two leave room for a
# checkpoint being written.
DEFAULT_STOP_LEAD_S = 120
WALL_TIME_SIGNAL = "USR1"  # `runyard stop` sends TERM: the script tells the two apart by it
STAMP = "date -u +%Y-%m-%dT%H:%M:%S.%3NZ"  # the batch script's time stamps


@dataclass(frozen=True)
class SlurmOptions:
    """What the job asks Slurm for."""

    nodes: int
    partition: str | None = None
    account: str | None = None  # charged for the job (sbatch --account)
    qos: str | None = None
    time: str | None = None  # Slurm's wall time: "MM", "HH:MM:SS", "D-HH:MM"
    gpus_per_node: str | None = None  # "2", or typed: "a100:2"
    cpus_per_node: int | None = None
    mem: str | None = None  # per node: "16G", "4000" (MB)
    setup: str = ""  # shell lines every node runs first (module load ..., source venv/bin/activate)
    # Seconds before the wall time that Slurm signals the job to stop and requeue itself.
    # Slurm checks time limits every 30 s, so the signal comes up to 30 s earlier than this.
    stop_lead_s: int = DEFAULT_STOP_LEAD_S

    def check(self) -> None:
        if not isinstance(self.nodes, int) or self.nodes < 1:
            raise UserError(f"--nodes: {self.nodes!r}; expected a whole number >= 1 (e.g. --nodes 2).")
        if self.cpus_per_node is not None and (not isinstance(self.cpus_per_node, int) or self.cpus_per_node < 1):
            raise UserError(f"--cpus-per-node: {self.cpus_per_node!r}; expected a whole number >= 1.")
        for flag, value in (("--partition", self.partition), ("--account", self.account), ("--qos", self.qos),
                            ("--time", self.time)):
            # An #SBATCH line cannot quote: one word each.
            if value is not None and not (isinstance(value, str) and re.fullmatch(r"\S+", value)):
                raise UserError(f"{flag}: {value!r}; expected one word, without spaces (e.g. {flag} "
                                f"{dict(partition='gpu', account='lab42', qos='normal', time='01:30:00')[flag[2:]]}).")
        if self.gpus_per_node is not None and not re.fullmatch(r"([\w.-]+:)?[1-9]\d*", self.gpus_per_node):
            raise UserError(f"--gpus-per-node: {self.gpus_per_node!r}; expected a count, or TYPE:COUNT "
                            "(e.g. --gpus-per-node 2 or --gpus-per-node a100:2).")
        if self.mem is not None and not re.fullmatch(r"[1-9]\d*[KMGT]?", self.mem):
            raise UserError(f"--mem: {self.mem!r}; expected memory per node as Slurm writes it, "
                            "a number with an optional K/M/G/T (e.g. --mem 16G; megabytes without one).")
        # sbatch takes 0..65535; at 0 Slurm sends no signal at all.
        if not isinstance(self.stop_lead_s, int) or not 1 <= self.stop_lead_s <= 65535:
            raise UserError(f"--stop-lead: {self.stop_lead_s!r}; expected whole seconds from 1 to 65535 "
                            f"(e.g. --stop-lead {DEFAULT_STOP_LEAD_S}).")

    def ray_nodes(self) -> list[dict[str, float]] | None:
        """The job's Ray nodes as far as the flags fix them: each node's Ray holds the CPUs
        Slurm gives its one task (--cpus-per-node; a whole core may add one) and the GPUs of
        --gpus-per-node. None without --cpus-per-node: Slurm's defaults decide (one CPU, or a
        core's threads), and only the driver, on the nodes it finds, can tell."""
        if self.cpus_per_node is None:
            return None
        gpus = int(self.gpus_per_node.rsplit(":", 1)[-1]) if self.gpus_per_node else 0
        return [{"CPU": float(self.cpus_per_node), "GPU": float(gpus)}] * self.nodes


@dataclass(frozen=True)
class Driver:
    """What the batch script runs once the job's Ray is up, each a `python -m runyard.cli.main`
    argv that the script completes with `--address`: `start` in the job's first allocation,
    `resume` in any later one (a requeue after the wall time, or after a node failed). Which one
    is decided on the node, by whether the job's ledger exists yet: a job stopped before its
    driver wrote one has nothing to resume."""

    start: list[str]
    resume: list[str]
    ledger: str  # the job's ledger, a path in the shared storage


def job_dir(storage: str | Path, job_id: str) -> Path:
    return Path(storage) / JOBS_FOLDER / job_id


def stage(folder: Path, project: Path, files: list[str], package: Path) -> None:
    """The job's folder: the project's `files` (relative paths) and the runyard package
    copied in, and a fresh Ray token readable by the user only."""
    if folder.exists():
        raise UserError(f"--id: a Slurm job's folder {folder} exists already; pick another job id.")
    (folder / "project").mkdir(parents=True)
    for relative in files:
        target = folder / "project" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / relative, target)
    shutil.copytree(package, folder / "code" / package.name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_private(folder / TOKEN_FILE, secrets.token_hex(32))


def batch_script(folder: Path, name: str, driver: Driver, options: SlurmOptions) -> str:
    """The job's batch script: Ray on every node of the allocation, then the driver; requeued
    when Slurm signals that the wall time is near (see the module's docstring)."""
    q = shlex.quote
    directives = [f"--job-name={name}", f"--nodes={options.nodes}", "--ntasks-per-node=1",
                  f"--output={folder}/slurm-%j.out", f"--chdir={folder}/project",
                  # A requeued job keeps its id and so its output file: append, not truncate.
                  "--open-mode=append", "--requeue",
                  f"--signal=B:{WALL_TIME_SIGNAL}@{options.stop_lead_s}"]
    asked = {"--partition": options.partition, "--account": options.account, "--qos": options.qos,
             "--time": options.time, "--gpus-per-node": options.gpus_per_node,
             # One task per node (the node's Ray): its CPUs are the node's.
             "--cpus-per-task": options.cpus_per_node, "--mem": options.mem}
    directives += [f"{flag}={value}" for flag, value in asked.items() if value is not None]
    runner = "python -m runyard.launch.slurm"
    job = q(str(folder))
    head_address = f"{q(str(folder / HEAD_ADDRESS_FILE))}-${ALLOCATION_ENV}"
    stop_file = f"{q(str(folder / STOP_FILE))}-${ALLOCATION_ENV}"
    lines = ["#!/bin/bash", *(f"#SBATCH {d}" for d in directives), "set -u",
             "# The user's setup, on every node (each step inherits this environment).",
             options.setup or ":",
             f"export PYTHONPATH={q(str(folder / 'code'))}${{PYTHONPATH:+:$PYTHONPATH}}",
             f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={q(str(folder / TOKEN_FILE))}",
             "export RAY_USAGE_STATS_ENABLED=0",
             f"export {ALLOCATION_ENV}=$SLURM_JOB_ID.${{SLURM_RESTART_COUNT:-0}}",
             # Set by the traps: "stop" (runyard stop: SIGTERM) or "wall time" (Slurm's signal).
             "stopping='' driver='' passed=''",
             "pass_on() { if [ -n \"$driver\" ] && [ -z \"$passed\" ]; then passed=1; kill -TERM \"$driver\"; fi; }",
             "# `runyard stop` signals this shell alone (scancel --batch): the driver ends its runs",
             "# KILLED, resumable, while its Ray still runs. Slurm's wall-time signal does the same,",
             "# and the job is requeued at the end.",
             "trap 'stopping=${stopping:-stop}; pass_on' TERM INT",
             f"trap 'stopping=${{stopping:-wall time}}; pass_on' {WALL_TIME_SIGNAL}",
             # Stamped (UTC, ms) so the output says how long the job's Ray took to start.
             f"echo \"runyard: allocation $SLURM_JOB_ID (restart ${{SLURM_RESTART_COUNT:-0}}) on $SLURM_JOB_NODELIST "
             f"at $({STAMP})\"",
             "head=$(hostname)",
             f"srun --overlap --nodes=1 --ntasks=1 --nodelist=\"$head\" {runner} head {job} &",
             f"if [ {options.nodes} -gt 1 ]; then",
             # --ntasks too: the job's own SLURM_NTASKS (one per node) would ask for more.
             f"  srun --overlap --nodes={options.nodes - 1} --ntasks={options.nodes - 1} --ntasks-per-node=1 "
             f"--exclude=\"$head\" "
             f"{runner} worker {job} &",
             "fi",
             f"stop_ray() {{ touch {stop_file}; wait; }}",
             f"{runner} wait {job} {options.nodes} || {{ code=$?; stop_ray; exit $code; }}",
             f"echo \"runyard: the job's Ray is up on {options.nodes} node{'s' if options.nodes != 1 else ''} "
             f"at $({STAMP})\"",
             f"address=\"$(cat {head_address})\"",
             # 130: what the driver exits with when stopped (EXIT_INTERRUPTED).
             "code=130",
             "if [ -z \"$stopping\" ]; then",
             f"  if [ -e {q(driver.ledger)} ]; then {shlex.join(driver.resume)} --address \"$address\" &",
             f"  else {shlex.join(driver.start)} --address \"$address\" &",
             "  fi",
             "  driver=$!",
             "  # A signal that came between starting the driver and noting its pid.",
             "  [ -n \"$stopping\" ] && pass_on",
             "  # A trapped signal ends `wait` early (status 128+n); the driver still has its runs to",
             "  # close. Once it has exited, `wait` gives its own status, which decides the requeue.",
             "  wait $driver",
             "  while kill -0 $driver 2>/dev/null; do wait $driver; done",
             "  wait $driver; code=$?",
             "fi",
             "stop_ray",
             "# Requeued only when the wall time stopped the sweep (not when it ended or failed): the",
             "# same job runs this script again in a new allocation, and resumes from the ledger.",
             "# Requeue rather than runyard sbatch-ing a new job: the job keeps its id (status, logs,",
             "# accounting), compute nodes need no right to submit, and a node failure's requeue",
             "# continues the same way. Slurm holds a requeued job back for its credential lifetime",
             "# (AuthInfo cred_expire, 120 s by default) before it may start again.",
             "if [ \"$stopping\" = 'wall time' ] && [ $code -eq 130 ]; then",
             f"  echo \"runyard: stopped before the wall time; requeueing Slurm job $SLURM_JOB_ID to continue "
             f"at $({STAMP})\"",
             "  exec scontrol requeue \"$SLURM_JOB_ID\"",
             "fi",
             "exit $code"]
    return "\n".join(lines) + "\n"


def submit(folder: Path, script: str, keep_folder: bool = False) -> str:
    """sbatch the script (kept in the job's folder); returns Slurm's job id, which the folder
    records (the latest allocation's). A refused new job leaves no folder behind;
    keep_folder: a job continued in a new allocation keeps its folder."""
    path = folder / "job.sbatch"
    path.write_text(script)
    completed = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:
        if not keep_folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"sbatch refused the job: {completed.stderr.strip()}")
    slurm_id = completed.stdout.strip().split(";")[0]
    (folder / "slurm_job_id").write_text(slurm_id)
    return slurm_id


def job_fields(slurm_job_id: str) -> dict[str, str]:
    """`scontrol show job`'s KEY=VALUE fields for the job; empty once Slurm has forgotten it."""
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", slurm_job_id], capture_output=True,
                           text=True, timeout=30)
    if shown.returncode != 0:
        return {}
    return dict(word.split("=", 1) for word in shown.stdout.split() if "=" in word)


def cancel(slurm_job_id: str, graceful: bool) -> None:
    """scancel the job; `graceful`: SIGTERM to its batch script alone, which stops the job."""
    signal_only = ["--batch", "--signal=TERM"] if graceful else []
    completed = subprocess.run(["scancel", *signal_only, slurm_job_id], capture_output=True, text=True,
                               timeout=30)
    if completed.returncode != 0:
        raise RuntimeError(f"scancel {slurm_job_id} failed: {completed.stderr.strip()}")


# ---------------------------------------------------------------- on the nodes


def _node(role: str, folder: Path) -> int:
    """Run this node's Ray (`ray start --block`, its own process group) until the job's stop
    file appears or the step is signalled; then stop that group, and only it."""
    address = socket.gethostbyname(socket.gethostname())
    cpus = os.environ.get("SLURM_CPUS_ON_NODE", "1")
    temp_dir = f"/tmp/ray-slurm-{_allocation()}"
    common = ["--block", "--node-ip-address", address, "--num-cpus", cpus, "--temp-dir", temp_dir,
              "--disable-usage-stats"]
    env = dict(os.environ)
    if role == "head":
        gcs, dashboard, client, autoscaler_metrics, dashboard_metrics, *ports = free_ports(5 + NODE_PORTS)
        # The dashboard stays on the node's loopback: compute nodes are shared.
        command = ["start", "--head", "--port", str(gcs), "--include-dashboard", "true",
                   "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                   "--ray-client-server-port", str(client)]
        env.update(AUTOSCALER_METRIC_PORT=str(autoscaler_metrics), DASHBOARD_METRIC_PORT=str(dashboard_metrics))
    else:
        ports = free_ports(NODE_PORTS)
        command = ["start", "--address", _read_when_there(_allocation_file(folder, HEAD_ADDRESS_FILE), JOIN_TIMEOUT_S)]
    ray = start_group([str(Path(sys.executable).with_name("ray")), *command, *common, *node_port_flags(ports)],
                      env=env, stdin=subprocess.DEVNULL)
    if role == "head":
        # Published once the GCS answers, so no worker tries to join before it can.
        def answering() -> bool:
            if not group_alive(ray.pid):
                raise RuntimeError(f"the job's Ray head exited during start on {address}")
            return _answers(address, gcs)

        try:
            wait_until(answering, JOIN_TIMEOUT_S,
                       lambda: f"the job's Ray head did not answer within {JOIN_TIMEOUT_S:.0f} s on {address}", 0.5)
        except RuntimeError as error:
            stop_group(ray.pid, RAY_STOP_GRACE_S, leader=ray)
            print(f"runyard: {error}", file=sys.stderr)
            return 1
        write_private(_allocation_file(folder, HEAD_ADDRESS_FILE), f"{address}:{gcs}")
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    while not stopped and not _allocation_file(folder, STOP_FILE).exists() and group_alive(ray.pid):
        time.sleep(1)
    stop_group(ray.pid, RAY_STOP_GRACE_S, leader=ray)
    return 0


def _wait(folder: Path, nodes: int) -> int:
    """Until the job's Ray has `nodes` live nodes (JOIN_TIMEOUT_S at most)."""
    import ray

    address = _read_when_there(_allocation_file(folder, HEAD_ADDRESS_FILE), JOIN_TIMEOUT_S)

    def connected() -> bool:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            return True
        except ConnectionError:
            return False

    def joined() -> list[str]:
        return [node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]]

    wait_until(connected, JOIN_TIMEOUT_S, lambda: f"the job's Ray at {address} did not answer", 2.0)
    try:
        wait_until(lambda: len(joined()) >= nodes, JOIN_TIMEOUT_S,
                   lambda: f"{nodes} Ray nodes did not join within {JOIN_TIMEOUT_S:.0f} s: "
                           f"{json.dumps(joined())}", 1.0)
    except RuntimeError as error:
        print(f"runyard: {error}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    return 0


def _allocation() -> str:
    """This allocation's name: Slurm's job id and how often the job was requeued."""
    return os.environ.get(ALLOCATION_ENV) or f"{os.environ.get('SLURM_JOB_ID', '0')}.0"


def _allocation_file(folder: Path, name: str) -> Path:
    return folder / f"{name}-{_allocation()}"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _read_when_there(path: Path, timeout_s: float) -> str:
    wait_until(lambda: path.exists() and path.read_text().strip(), timeout_s,
               lambda: f"{path} did not appear within {timeout_s:.0f} s", 0.5)
    return path.read_text().strip()


def main(argv: list[str]) -> int:
    """`python -m runyard.launch.slurm head|worker JOB_DIR` and `wait JOB_DIR NODES`: what the
    batch script runs on the nodes."""
    role, folder = argv[0], Path(argv[1])
    if role == "wait":
        return _wait(folder, int(argv[2]))
    return _node(role, folder)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
