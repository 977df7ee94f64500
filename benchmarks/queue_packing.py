"""The sweep queue side by side vs one sweep after another: time to drain the same queue.

Three sweeps of 3 trials each, every trial 1 CPU for ~8 s (16 steps of 0.5 s), queued on an
embedded Ray of 2 CPUs. One after another (`queue run --max-running 1`), each sweep's third
trial runs alone and leaves a CPU idle; side by side (plain `queue run`) the next sweep starts
as soon as that CPU is free. Both go through the installed `runyard` command, runner start and
every sweep's own process included. The two alternate, `--repeats` times each, in swapped order
every other repeat, and the ratio of medians is reported.

    python benchmarks/queue_packing.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNYARD = Path(sys.executable).with_name("runyard")
SWEEPS = 3
SPEC = """\
name: {name}
workload: toy.quadratic
config: {{sleep_s: 0.5}}
stop: {{iterations: 16}}
checkpoint: {{every: 0}}
sweep:
  samples: 3
  metric: score
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def drain(workdir: Path, max_running: int | None) -> float:
    """Queue the sweeps in a fresh project folder, then time `runyard queue run`."""
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    for index in range(SWEEPS):
        spec = workdir / f"sweep{index}.yaml"
        spec.write_text(SPEC.format(name=f"sweep{index}"))
        subprocess.run([str(RUNYARD), "queue", "add", str(spec)], cwd=workdir, env=env,
                       check=True, capture_output=True)
    command = [str(RUNYARD), "queue", "run", "--num-cpus", "2"]
    if max_running is not None:
        command += ["--max-running", str(max_running)]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    modes = {"one after another": 1, "side by side": None}
    times: dict[str, list[float]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            order = list(modes) if repeat % 2 == 0 else list(modes)[::-1]
            for name in order:
                folder = Path(scratch) / f"r{repeat}-{name.replace(' ', '-')}"
                times[name].append(drain(folder, modes[name]))
    sequential, packed = (statistics.median(times[name]) for name in modes)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, embedded Ray with 2 CPUs")
    print(f"{SWEEPS} sweeps x 3 trials x ~8 s on 1 CPU each, {args.repeats} repeat(s)")
    print(f"{'queue run':<20}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<20}{statistics.median(values):>10.1f}   "
              f"{', '.join(f'{v:.1f}' for v in values)}")
    print(f"ratio side by side / one after another: {packed / sequential:.3f}")


if __name__ == "__main__":
    main()
