"""The command workload's cost: a sweep of a script vs the same sweep of a built-in workload.

32 trials, each one iteration that sleeps 1 s, on 2 CPUs, in one Ray session: once as
`workload: command` running a Python script that sleeps and prints one JSON line, once as
toy.quadratic with `sleep_s: 1.0`. Both go through everything runyard does (trainable, final
checkpoint, MLflow runs, plots); the difference is the command workload's own: a process per
trial, its reader threads, its log files as artifacts. The two alternate, `--repeats` times,
in swapped order every other repeat (this machine's load drifts), and the ratio of medians is
reported.

    python benchmarks/command_overhead.py [--trials 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

SCRIPT = """\
import json, sys, time
time.sleep(1.0)
x = float(sys.argv[1])
print(json.dumps({"score": 1.0 - (x - 0.3) ** 2}))
"""

COMMAND_SPEC = """\
name: command-overhead
workload: command
config:
  command: python sleep_once.py {{params.x}}
  params: {{x: 0.0}}
  metrics: {{score: max}}
"""

BUILT_IN_SPEC = """\
name: built-in-overhead
workload: toy.quadratic
config: {{sleep_s: 1.0}}
"""

SWEEP = """\
stop: {{iterations: 1}}
tracking: {{experiment: command-overhead}}
sweep:
  samples: {trials}
  metric: score
  space:
    config.{key}: {{uniform: [0.0, 1.0]}}
"""


def timed_sweep(spec_text: str, workdir: Path, uri: str) -> float:
    """Seconds `runyard run` spends on the sweep, from planned trials to the finished job."""
    from rich.console import Console

    from runyard.execute.job import run_job
    from runyard.plan import expand
    from runyard.spec import load_spec

    spec_path = workdir / "sweep.yaml"
    spec_path.write_text(spec_text)
    spec = load_spec(spec_path)
    started = time.perf_counter()
    outcome = run_job(spec, expand(spec), uri, workdir, Console(file=open(os.devnull, "w")),
                      storage_root=workdir / "results")
    elapsed = time.perf_counter() - started
    assert outcome.status == "FINISHED", outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from runyard.launch import ray_session
    from runyard.tracking.store import JobTracking

    specs = {
        "command": COMMAND_SPEC.format() + SWEEP.format(trials=args.trials, key="params.x"),
        "toy.quadratic": BUILT_IN_SPEC.format() + SWEEP.format(trials=args.trials, key="x"),
    }
    times: dict[str, list[float]] = {name: [] for name in specs}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        for repeat in range(args.repeats):
            order = list(specs) if repeat % 2 == 0 else list(specs)[::-1]
            for name in order:
                workdir = Path(scratch) / f"{name}-{repeat}"
                workdir.mkdir()
                (workdir / "sleep_once.py").write_text(SCRIPT)
                # The project's MLflow store exists before the clock starts, as in any project
                # that has run something before.
                uri = f"sqlite:///{workdir / 'mlflow.db'}"
                JobTracking(uri, "command-overhead").close()
                times[name].append(timed_sweep(specs[name], workdir, uri))
    command, built_in = (statistics.median(times[name]) for name in specs)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Ray with 2 CPUs; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{args.trials} trials x 1 iteration of 1 s sleep, {args.repeats} repeats, "
          "order swapped each")
    print(f"{'workload':<15}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<15}{statistics.median(values):>10.1f}   "
              f"{', '.join(f'{v:.1f}' for v in values)}")
    print(f"ratio command / toy.quadratic: {command / built_in:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
