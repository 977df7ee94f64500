"""What a resume costs: from `runyard resume` to the first new result, next to what a fresh
`runyard run` of the same sweep takes to its first result, both measured in one run here.

A 64-trial toy sweep (sleep 0.2 s per step, 10 steps, checkpoint every 2) runs on an embedded
Ray of 2 CPUs until `--kill-after` trials have finished; then its driver and every process of
its session (Ray's too) are SIGKILLed — a lost machine — and `runyard resume` continues it.
Times come from the MLflow metric timestamps, which the driver stamps when a trial's result
reaches it, so polling adds nothing to the figures.

    python benchmarks/resume_cost.py [--trials 64] [--kill-after 12]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe

RUNYARD = Path(sys.executable).with_name("runyard")

SPEC = """\
name: resume-cost
workload: toy.quadratic
config: {{sleep_s: 0.2}}
stop: {{iterations: 10}}
checkpoint: {{every: 2, keep: 1}}
tracking: {{experiment: resume-cost}}
sweep:
  samples: {trials}
  metric: score
  max_concurrent: 2
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def query(db: Path, sql: str, *args: object) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        try:
            return connection.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []


def first_result_after(db: Path, started_ms: int) -> float:
    """Seconds from `started_ms` to the first `score` point stamped after it."""
    ((first,),) = query(db, "SELECT MIN(timestamp) FROM metrics WHERE key = 'score' AND "
                            "timestamp > ?", started_ms)
    return (first - started_ms) / 1000


def finished_trials(db: Path) -> int:
    rows = query(db, "SELECT COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                     "WHERE t.key = 'runyard.kind' AND t.value = 'trial' AND r.status = 'FINISHED'")
    return rows[0][0] if rows else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--kill-after", type=int, default=12, help="finished trials before the kill")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="runyard-resume-cost-"))
    (workdir / "sweep.yaml").write_text(SPEC.format(trials=args.trials))
    db = workdir / ".runyard" / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}

    run_started = int(time.time() * 1000)
    driver = subprocess.Popen([str(RUNYARD), "run", "sweep.yaml", "--id", "resume-cost",
                               "--num-cpus", "2"], cwd=workdir, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while finished_trials(db) < args.kill_after:
        if driver.poll() is not None:
            sys.exit(f"the sweep ended (exit {driver.returncode}) before it could be killed")
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    done_before = finished_trials(db)
    time.sleep(2)  # let the killed Ray's processes go

    resume_started = int(time.time() * 1000)
    resumed = subprocess.run([str(RUNYARD), "resume", "resume-cost", "--num-cpus", "2"],
                             cwd=workdir, env=env, capture_output=True, text=True)
    resume_ended = time.time()
    if resumed.returncode != 0:
        sys.exit(f"resume failed ({resumed.returncode}):\n{resumed.stdout}\n{resumed.stderr}")

    to_first_run = first_result_after(db, run_started)
    to_first_resumed = first_result_after(db, resume_started)
    print(f"machine: {describe()}")
    print(f"{args.trials}-trial toy sweep, killed after {done_before} trials finished; resume "
          f"ran the other {finished_trials(db) - done_before} to the end in "
          f"{resume_ended - resume_started / 1000:.1f} s")
    print()
    print("| from                         | to the first result | ratio |")
    print("|------------------------------|--------------------:|------:|")
    print(f"| `runyard run` (fresh start)  | {to_first_run:17.2f} s | 1.00 |")
    print(f"| `runyard resume` (after kill)| {to_first_resumed:17.2f} s | "
          f"{to_first_resumed / to_first_run:.2f} |")
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    main()
