"""Metrics per second into a tracking SERVER with several trials writing at once:
runyard's TrackingWriter (one per job, batching every trial's values into `log_batch`) vs one
`MlflowClient.log_metric` request per value, on a SQLite- and a PostgreSQL-backed server.

Each backend gets its own basic-auth MLflow server (runyard.tracking.server.serve, as
`runyard tracking serve` starts it); PostgreSQL is a throwaway server in a temp dir (initdb +
pg_ctl from the Debian package `postgresql`). `--writers` threads stand in for concurrent
trials, each with its own run, reporting `--metrics` values per step. A cell's rate counts
from the first value reported to the moment every value is stored on the server (the
writer flushed, the runs ended), and each cell checks that every value arrived.
The basic-auth server checks the password hash on every request, so what a request costs
(not what a value costs) sets the pace: per-value calls get few steps to keep the run short.

    python benchmarks/tracking_throughput.py [--writers 4] [--metrics 10]
        [--steps-batched 100] [--steps-per-value 5]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from runyard.launch.process_nodes import free_ports  # noqa: E402
from runyard.tracking.server import serve  # noqa: E402
from runyard.tracking.store import JobTracking, quiet_mlflow  # noqa: E402


@contextlib.contextmanager
def throwaway_postgres():
    """A PostgreSQL server on a free port in a temp dir; yields its URI, removes it after."""
    initdb, pg_ctl = (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:] or [shutil.which(name)]
                      for name in ("initdb", "pg_ctl"))
    if not (initdb[0] and pg_ctl[0]):
        raise SystemExit("PostgreSQL is not installed (apt-get install -y postgresql)")
    # initdb and the server refuse to run as root.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="ry-pg-bench-"))
    data_dir, password = root / "data", secrets.token_hex(16)
    (root / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_ports(1)[0]
    subprocess.run([*as_postgres, initdb[0], "-D", str(data_dir), "-U", "runyard", "-A", "scram-sha-256",
                    f"--pwfile={root / 'pw'}", "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    # Durable commits (fsync on): a benchmark of the backend as a head node would run it.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_postgres, pg_ctl[0], "-D", str(data_dir), "-o", options, "-l", str(root / "log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=port, user="runyard", password=password, dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE mlflow")
        admin.close()
        yield f"postgresql://runyard:{password}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_postgres, pg_ctl[0], "-D", str(data_dir), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def values_of(writer: int, step: int, metrics: int) -> dict[str, float]:
    return {f"metric_{i}": writer * 1000.0 + step + i / 100 for i in range(metrics)}


def run_writers(count: int, write) -> float:
    """Start `count` writer threads together; seconds until all have returned."""
    start = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        start.wait()
        try:
            write(index)
        except BaseException as error:  # noqa: BLE001 — re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began


def with_runyard_writer(uri: str, experiment: str, args) -> tuple[float, list[str]]:
    """One TrackingWriter for the job (as runyard's driver has), every trial reporting into it."""
    tracking = JobTracking(uri, experiment)
    runs = [tracking.start_run(f"trial-{i}", {}, {}) for i in range(args.writers)]
    for run in runs:
        run.id  # noqa: B018 — wait until created: trials' runs exist before they report

    def write(index: int) -> None:
        for step in range(args.steps_batched):
            tracking.writer.log_metrics(runs[index], values_of(index, step, args.metrics), step)

    def write_and_deliver() -> None:
        run_writers(args.writers, write)
        for run in runs:
            tracking.writer.end_run(run, "FINISHED")
        tracking.close()  # returns once everything is on the server

    began = time.perf_counter()
    write_and_deliver()
    return time.perf_counter() - began, [run.id for run in runs]


def with_per_value_calls(uri: str, experiment: str, args) -> tuple[float, list[str]]:
    """Each trial with its own client, one log_metric request per value."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run_ids = [client.create_run(experiment_id, run_name=f"trial-{i}").info.run_id for i in range(args.writers)]
    clients = [MlflowClient(uri) for _ in range(args.writers)]

    def write(index: int) -> None:
        for step in range(args.steps_per_value):
            for key, value in values_of(index, step, args.metrics).items():
                clients[index].log_metric(run_ids[index], key, value, step=step)

    elapsed = run_writers(args.writers, write)
    for run_id in run_ids:
        client.set_terminated(run_id, "FINISHED")
    return elapsed, run_ids


def check_delivered(uri: str, run_ids: list[str], steps: int, metrics: int) -> None:
    client = MlflowClient(uri)
    for run_id in run_ids:
        for key in ("metric_0", f"metric_{metrics - 1}"):
            got = sorted(m.step for m in client.get_metric_history(run_id, key))
            if got != list(range(steps)):
                raise AssertionError(f"run {run_id} {key}: {len(got)} of {steps} steps arrived")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=4, help="concurrent trials")
    parser.add_argument("--metrics", type=int, default=10, help="values each trial reports per step")
    parser.add_argument("--steps-batched", type=int, default=100, help="steps per trial, runyard writer")
    parser.add_argument("--steps-per-value", type=int, default=5, help="steps per trial, per-value calls")
    args = parser.parse_args()
    quiet_mlflow()
    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = secrets.token_hex(16)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

    methods = {"runyard TrackingWriter": (with_runyard_writer, args.steps_batched),
               "log_metric per value": (with_per_value_calls, args.steps_per_value)}
    rates: dict[tuple[str, str], float] = {}
    work = Path(tempfile.mkdtemp(prefix="ry-bench-tracking-"))
    try:
        with throwaway_postgres() as postgres_uri:
            backends = {"SQLite": f"sqlite:///{work / 'mlflow.db'}", "PostgreSQL": postgres_uri}
            for backend, backend_uri in backends.items():
                server = serve(backend_uri, str(work / f"artifacts-{backend}"), state_dir=work / f"server-{backend}")
                try:
                    MlflowClient(server.uri).create_experiment("throughput")
                    for method, (measure, steps) in methods.items():
                        elapsed, run_ids = measure(server.uri, "throughput", args)
                        check_delivered(server.uri, run_ids, steps, args.metrics)
                        rates[backend, method] = args.writers * steps * args.metrics / elapsed
                        print(f"  {backend:<10} {method:<24} {rates[backend, method]:>9.0f} metrics/s "
                              f"({args.writers * steps * args.metrics} values in {elapsed:.1f} s)", flush=True)
                finally:
                    server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.writers} concurrent writers x {args.metrics} metrics per step, one basic-auth MLflow "
          f"server per backend\n{describe()}\n")
    names = list(methods)
    print(f"{'backend':<12}" + "".join(f"{name:>26}" for name in names) + f"{'batched / per-value':>22}")
    for backend in ("SQLite", "PostgreSQL"):
        cells = "".join(f"{rates[backend, name]:>20.0f} m/s  " for name in names)
        print(f"{backend:<12}{cells}{rates[backend, names[0]] / rates[backend, names[1]]:>20.1f}x")
    print(f"{'PG / SQLite':<12}" + "".join(f"{rates['PostgreSQL', n] / rates['SQLite', n]:>20.2f}x     " for n in names))


if __name__ == "__main__":
    main()
