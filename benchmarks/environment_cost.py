"""What a script's own packages (`environment:`) cost a job: the first job on a machine, which
builds the environment, against later jobs, which find it built, against no environment.

A one-trial command job whose script imports gymnasium and reports its version, through
`runyard run` as a researcher types it (whole process: Ray's start, the store, the trial):
  none    no environment block (runyard's gymnasium),
  fresh   environment: {pip: [gymnasium==0.29.1]} with an empty environment cache,
  cached  the same, the environment built by an earlier job.
Rounds rotate the order (this machine's load drifts); medians are reported.

    python benchmarks/environment_cost.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe  # beside this script

SCRIPT = """\
import gymnasium
major, minor = gymnasium.__version__.split(".")[:2]
print(f"major={major} minor={minor}")
"""

SPEC = """\
name: environment-cost
workload: command
{environment}
config:
  command: python versions.py
  metrics: {{minor: max, major: max}}
"""
PINNED = "environment: {pip: [gymnasium==0.29.1]}"
RUNYARD = Path(sys.executable).parent / "runyard"


def timed_job(project: Path, environment: str, cache: Path) -> float:
    (project / "job.yaml").write_text(SPEC.format(environment=environment))
    started = time.perf_counter()
    subprocess.run([str(RUNYARD), "run", "job.yaml"], cwd=project, check=True,
                   capture_output=True, env={**_environ(), "RUNYARD_ENVIRONMENTS": str(cache)})
    return time.perf_counter() - started


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    variants = ["none", "fresh", "cached"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    before = describe()
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        project.mkdir()
        (project / "versions.py").write_text(SCRIPT)
        cache = Path(scratch) / "environments"
        timed_job(project, PINNED, cache)  # a built environment for the first `cached`
        for repeat in range(args.repeats):
            shift = repeat % len(variants)
            for name in variants[shift:] + variants[:shift]:
                if name == "fresh":
                    fresh = Path(scratch) / f"fresh-{repeat}"
                    times[name].append(timed_job(project, PINNED, fresh))
                    shutil.rmtree(fresh)
                else:
                    times[name].append(timed_job(project, PINNED if name == "cached" else "",
                                                 cache))
    print(f"machine before: {before}\nmachine after:  {describe()}")
    print("one-trial command job through `runyard run` (whole process), "
          f"{args.repeats} repeats, order rotated each")
    print(f"{'environment':<12}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<12}{statistics.median(values):>10.1f}   "
              f"{', '.join(f'{v:.1f}' for v in values)}")
    none = statistics.median(times["none"])
    print(f"fresh - none: {statistics.median(times['fresh']) - none:+.1f} s (building it)   "
          f"cached - none: {statistics.median(times['cached']) - none:+.1f} s")


if __name__ == "__main__":
    main()
