"""How long reading a finished sweep back takes as it grows: `runyard best`, `explain`, `ls`
and `compare --trials`, whole process, on a toy sweep of `--trials` trials (one iteration
each, made once in a scratch project or reused with `--project`), beside `runyard --help`
(the CLI's floor) and a Python that only imports MLflow's client (what reading MLflow
cannot do without).

Each command runs as a fresh process `--repeats` times, interleaved, and the median wall
time is reported. With `--before DIR` (a checkout of an older runyard), the runyard commands
also run with DIR/platform first on the path, in the same rounds, as "before:" rows.

    python benchmarks/readback.py [--trials 500] [--repeats 3] [--project DIR] [--before DIR]
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

from _machine import describe

REPO = Path(__file__).resolve().parents[1]
RUNYARD = str(Path(sys.executable).parent / "runyard")

SWEEP = """\
name: readback
workload: toy.quadratic
config: {{sleep_s: 0.0}}
stop: {{iterations: 1}}
tracking: {{experiment: readback}}
sweep:
  samples: {trials}
  metric: score
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def make_sweep(project: Path, trials: int) -> None:
    """The sweep `readback` in `project`, run once (minutes at thousands of trials)."""
    if (project / ".runyard" / "sweeps" / "readback.json").exists():
        return
    (project / "readback.yaml").write_text(SWEEP.format(trials=trials))
    started = time.perf_counter()
    subprocess.run([RUNYARD, "run", "readback.yaml", "--id", "readback"], cwd=project, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"made a {trials}-trial sweep in {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--project", type=Path, help="a scratch project to make the sweep in, or reuse")
    parser.add_argument("--before", type=Path, help="an older runyard checkout to run beside this one")
    args = parser.parse_args()

    project = args.project or Path(tempfile.mkdtemp(prefix="runyard-readback-"))
    project.mkdir(parents=True, exist_ok=True)
    make_sweep(project, args.trials)
    now = {"PYTHONPATH": str(REPO / "platform")}
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "runyard --help": ([RUNYARD, "--help"], now),
        "python -c 'import mlflow.tracking'": ([sys.executable, "-c", "import mlflow.tracking"], None),
    }
    for words in (["best", "readback"], ["explain", "readback"], ["ls"],
                  ["compare", "readback", "--trials", "t0000,t0001"]):
        commands[f"runyard {' '.join(words)}"] = ([RUNYARD, *words], now)
        if args.before:  # `python -m`: its console script may name another entry point
            commands[f"before: runyard {' '.join(words)}"] = (
                [sys.executable, "-m", "runyard.cli.main", *words],
                {"PYTHONPATH": str(args.before / "platform")})

    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, (argv, env) in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, cwd=project, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
            times[name].append(time.perf_counter() - started)

    print(describe())
    print(f"{args.trials}-trial sweep, median of {args.repeats}, whole process")
    for name, seconds in times.items():
        print(f"  {name:<40}{statistics.median(seconds):>7.2f} s")


if __name__ == "__main__":
    main()
