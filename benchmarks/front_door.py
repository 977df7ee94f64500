"""How fast the front door answers: `runyard --help` and `runyard validate` (a digits spec, a
toy sweep, an RL spec) side by side with a bare `python -c pass`, a Python that imports
pydantic and yaml (what checking a spec cannot do without), and `ray --help`, in one run.

With `--runs`, also what `runyard run` costs around a short job: a 3 s script alone beside
the same script as a one-trial command job, joining the warm Ray and with a Ray of its own
(RUNYARD_WARM_RAY=0), and jobs/cartpole_pg.yaml (CartPole to 475) both ways. The warm Ray is
this benchmark's own (a scratch RUNYARD_WARM_RAY_DIR), started by the warm-up round and
stopped at the end.

Each command runs as a fresh process, `--repeats` times, interleaved (one round runs every
command once, in the same order), and the median wall time is reported with its ratio to
`python -c pass`. The machine line carries the load average: on a shared machine only the
ratios within one run compare.

With `--before DIR` (a checkout of an older runyard, e.g. /work/main), the runyard commands
also run with DIR/platform first on the path, in the same rounds, as "before:" rows (with
`--runs`, the short jobs' warm runs too).

    python benchmarks/front_door.py [--repeats 7] [--before DIR] [--runs]
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
BIN = Path(sys.executable).parent

TOY_SWEEP = """\
name: toy-sweep
workload: toy.quadratic
stop: {iterations: 5}
sweep:
  samples: 8
  metric: score
  space:
    config.x: {uniform: [0.0, 1.0]}
"""
SCRIPT_S = 3.0
SCRIPT = f"""\
import json, time
time.sleep({SCRIPT_S})
print(json.dumps({{"done": 1}}))
"""
SCRIPT_JOB = """\
name: script
workload: command
config:
  command: python script.py
  metrics: {done: max}
stop: {iterations: 1}
"""


Command = tuple[list[str], dict[str, str] | None]


def run_commands(scratch: Path, before: Path | None) -> dict[str, Command]:
    """`runyard run` of short jobs, warm and cold, beside the script alone; with `before`,
    the warm runs also by the older checkout (`python -m runyard.cli.main`, as its console
    script may differ), joining the same warm Ray."""
    (scratch / "script.py").write_text(SCRIPT)
    (scratch / "script.yaml").write_text(SCRIPT_JOB)
    runyard = str(BIN / "runyard")
    warm = {"RUNYARD_WARM_RAY": "1", "RUNYARD_WARM_RAY_DIR": str(scratch / "warm-ray")}
    cold = {"RUNYARD_WARM_RAY": "0"}
    script = [runyard, "run", str(scratch / "script.yaml")]
    cartpole = [runyard, "run", str(REPO / "jobs/cartpole_pg.yaml")]
    runs = {
        f"python script.py ({SCRIPT_S:.0f} s)": ([sys.executable, str(scratch / "script.py")], None),
        "runyard run script.yaml, warm Ray": (script, warm),
        "runyard run script.yaml, own Ray": (script, cold),
        "runyard run cartpole_pg.yaml, warm Ray": (cartpole, warm),
        "runyard run cartpole_pg.yaml, own Ray": (cartpole, cold),
    }
    if before is not None:
        then = {**warm, "PYTHONPATH": str(before / "platform")}
        old = [sys.executable, "-m", "runyard.cli.main", "run"]
        runs["before: runyard run script.yaml, warm"] = (old + [str(scratch / "script.yaml")], then)
        runs["before: runyard run cartpole_pg.yaml, warm"] = (
            old + [str(before / "jobs/cartpole_pg.yaml")], then)  # its spec as it was then
    return runs


def commands(scratch: Path, before: Path | None) -> dict[str, Command]:
    toy = scratch / "toy_sweep.yaml"
    toy.write_text(TOY_SWEEP)
    runyard, python = str(BIN / "runyard"), sys.executable
    runyard_commands = {
        "runyard --help": [runyard, "--help"],
        "runyard validate digits_linear.yaml": [runyard, "validate", str(REPO / "jobs/digits_linear.yaml")],
        "runyard validate toy sweep": [runyard, "validate", str(toy)],
        "runyard validate cartpole_pg.yaml (RL)": [runyard, "validate", str(REPO / "jobs/cartpole_pg.yaml")],
    }
    now = {"PYTHONPATH": str(REPO / "platform")}
    runs: dict[str, Command] = {
        "python -c pass": ([python, "-c", "pass"], None),
        "python -c 'import pydantic, yaml'": ([python, "-c", "import pydantic, yaml"], None),
        "ray --help": ([str(BIN / "ray"), "--help"], None),
    }
    runs.update({name: (argv, now) for name, argv in runyard_commands.items()})
    if before is not None:
        then = {"PYTHONPATH": str(before / "platform")}
        # `python -m`: an older checkout's console script may name another entry point.
        runs.update({f"before: {name}": ([python, "-m", "runyard.cli.main", *argv[1:]], then)
                     for name, argv in runyard_commands.items()})
    return runs


def wall_time(command: Command, cwd: Path) -> float:
    argv, extra_env = command
    env = {**os.environ, **(extra_env or {})}
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, default=None, metavar="DIR",
                        help="an older runyard checkout to time alongside")
    parser.add_argument("--runs", action="store_true",
                        help="also `runyard run` of short jobs, warm Ray and own Ray")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = commands(Path(scratch), args.before)
        if args.runs:
            runs.update(run_commands(Path(scratch), args.before))
        for command in runs.values():  # warm the file cache, so the first round is not an outlier
            wall_time(command, Path(scratch))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, command in runs.items():
                times[name].append(wall_time(command, Path(scratch)))
        if args.runs:
            subprocess.run([str(BIN / "runyard"), "ray", "stop"], check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "RUNYARD_WARM_RAY_DIR": str(Path(scratch) / "warm-ray")})
    print(describe())
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["python -c pass"]
    print(f"{'command':<42} {'median s':>9} {'min s':>7} {'x python':>9}   ({args.repeats} runs each)")
    for name, median in medians.items():
        print(f"{name:<42} {median:>9.3f} {min(times[name]):>7.3f} {median / base:>9.1f}")


if __name__ == "__main__":
    main()
