"""The command workload's cost: a sweep of a script vs the same sweep of a built-in workload,
and the cost of each place a script can report to.

32 trials, each one iteration that sleeps 1 s, on 2 CPUs, in one Ray session: as
`workload: command` running a Python script that sleeps and reports one value — on stdout
(a JSON line), through a TensorBoard SummaryWriter (`reports: tensorboard`, tensorboardX),
or with MLflow itself (`reports: mlflow`) — and as toy.quadratic with `sleep_s: 1.0`. All go
through everything runyard does (trainable, final checkpoint, MLflow runs, plots). The
variants alternate, `--repeats` times, in rotated order each repeat (this machine's load
drifts), and ratios of medians are reported: command/stdout against the built-in workload,
and each other report source against stdout. What a source costs includes what its program
pays (importing tensorboardX or mlflow, which the script would import anyway), printed
beside the ratios.

    python benchmarks/command_overhead.py [--trials 32] [--repeats 2] [--only stdout,mlflow]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

# One script per report source: the same sleep and value, reported where the source reads.
SCRIPTS = {
    "stdout": """\
import json, sys, time
time.sleep(1.0)
x = float(sys.argv[1])
print(json.dumps({"score": 1.0 - (x - 0.3) ** 2}))
""",
    "tensorboard": """\
import sys, time
from tensorboardX import SummaryWriter
writer = SummaryWriter("runs/once")
time.sleep(1.0)
x = float(sys.argv[1])
writer.add_scalar("score", 1.0 - (x - 0.3) ** 2, 1)
writer.close()
""",
    "mlflow": """\
import sys, time
import mlflow
with mlflow.start_run():
    time.sleep(1.0)
    x = float(sys.argv[1])
    mlflow.log_metric("score", 1.0 - (x - 0.3) ** 2, step=1)
""",
}
# What each program imports to report (measured alone, to attribute the ratios).
REPORT_IMPORTS = {"stdout": "json", "tensorboard": "tensorboardX", "mlflow": "mlflow"}

COMMAND_SPEC = """\
name: command-overhead
workload: command
config:
  command: python sleep_once.py {{params.x}}
  params: {{x: 0.0}}
  reports: {reports}
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
    from _machine import timed_run_job  # beside this script

    return timed_run_job(workdir / "sweep.yaml", spec_text, uri, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default=",".join(SCRIPTS),
                        help="report sources to run, comma-separated (default: all)")
    args = parser.parse_args()
    from runyard.launch import ray_session
    from runyard.tracking.store import JobTracking

    sources = [name for name in args.only.split(",") if name]
    specs = {f"command/{source}": COMMAND_SPEC.format(reports=source)
             + SWEEP.format(trials=args.trials, key="params.x") for source in sources}
    specs["toy.quadratic"] = BUILT_IN_SPEC.format() + SWEEP.format(trials=args.trials, key="x")
    times: dict[str, list[float]] = {name: [] for name in specs}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        for repeat in range(args.repeats):
            shift = repeat % len(specs)
            order = list(specs)[shift:] + list(specs)[:shift]
            for name in order:
                workdir = Path(scratch) / f"{name.replace('/', '-')}-{repeat}"
                workdir.mkdir()
                source = name.removeprefix("command/")
                (workdir / "sleep_once.py").write_text(SCRIPTS.get(source, SCRIPTS["stdout"]))
                # The project's MLflow store exists before the clock starts, as in any project
                # that has run something before.
                uri = f"sqlite:///{workdir / 'mlflow.db'}"
                JobTracking(uri, "command-overhead").close()
                times[name].append(timed_sweep(specs[name], workdir, uri))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Ray with 2 CPUs; "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{args.trials} trials x 1 iteration of 1 s sleep, {args.repeats} repeats, "
          "order rotated each")
    print(f"{'workload':<22}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<22}{medians[name]:>10.1f}   {', '.join(f'{v:.1f}' for v in values)}")
    if "command/stdout" in medians:
        print(f"ratio command/stdout / toy.quadratic: "
              f"{medians['command/stdout'] / medians['toy.quadratic']:.3f}  (target <= 1.10)")
        for source in sources:
            if source != "stdout":
                print(f"ratio command/{source} / command/stdout: "
                      f"{medians['command/' + source] / medians['command/stdout']:.3f}  "
                      f"(target <= 1.10; its program imports {REPORT_IMPORTS[source]} in "
                      f"{import_seconds(REPORT_IMPORTS[source]):.2f} s alone)")


def import_seconds(module: str) -> float:
    """Seconds a fresh interpreter takes to import `module`, less a bare start (median of 3)."""
    import subprocess
    import sys
    import time

    def once(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    return statistics.median(once(f"import {module}") - once("pass") for _ in range(3))


if __name__ == "__main__":
    main()
