"""Submit-to-first-output latency: runyard's Jobs API client vs `ray job submit`.

Both submit the same tiny working dir and a job that prints one line, to the same secured
local cluster (token auth on), alternating which goes first each round. Measured: seconds from
starting the submission to seeing the job's first line of output. runyard's client runs
in-process (no CLI start-up), `ray job submit` as the CLI users run, so the ratio is what a
user sees from each.

    PYTHONPATH=platform python benchmarks/submit_latency.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runyard.launch import jobs_api, local_cluster

MARKER = "first-output-marker"


def runyard_latency(cluster: local_cluster.LocalCluster, working_dir: Path) -> float:
    start = time.perf_counter()
    job = jobs_api.submit(f"python -c \"print('{MARKER}', flush=True)\"", cluster.jobs_address, working_dir,
                          state_dir=cluster.state_dir).job_id
    for chunk in jobs_api.logs(job, cluster.jobs_address, follow=True, state_dir=cluster.state_dir):
        if MARKER in chunk:
            return time.perf_counter() - start
    raise RuntimeError(f"job {job} ended without printing the marker")


def ray_cli_latency(cluster: local_cluster.LocalCluster, working_dir: Path) -> float:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": cluster.token_path}
    env.pop("RAY_AUTH_TOKEN", None)
    command = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", cluster.jobs_address,
               "--working-dir", str(working_dir), "--", "python", "-c", f"print('{MARKER}', flush=True)"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if MARKER in line and "python -c" not in line:
                return time.perf_counter() - start
    finally:
        process.wait(timeout=120)
    raise RuntimeError("`ray job submit` ended without printing the marker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ry-bench-") as tmp:
        working_dir = Path(tmp) / "project"
        working_dir.mkdir()
        (working_dir / "train.py").write_text("print('a small project file')\n")
        cluster = local_cluster.up(workers=1, state_dir=Path(tmp) / "state", storage_dir=Path(tmp) / "storage",
                                   with_tracking=False, echo=lambda _: None)
        try:
            runyard_latency(cluster, working_dir)  # warm-up: package upload, worker start
            times = {"runyard jobs_api": [], "ray job submit": []}
            for round_index in range(args.rounds):
                pairs = [("runyard jobs_api", runyard_latency), ("ray job submit", ray_cli_latency)]
                for name, measure in pairs if round_index % 2 == 0 else reversed(pairs):
                    times[name].append(measure(cluster, working_dir))
        finally:
            local_cluster.down(Path(tmp) / "state", echo=lambda _: None)
    baseline = statistics.median(times["ray job submit"])
    print(f"submit -> first output, {args.rounds} rounds, local cluster (head + 1 worker, token auth)")
    print(f"{'client':18s} {'median s':>9s} {'min s':>7s} {'ratio vs ray CLI':>17s}")
    for name, values in times.items():
        print(f"{name:18s} {statistics.median(values):9.2f} {min(values):7.2f} {statistics.median(values) / baseline:17.2f}")


if __name__ == "__main__":
    main()
