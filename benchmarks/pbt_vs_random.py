"""Population-based training against random search and TPE on the toy whose best learning rate
shrinks as it trains (tests/test_sweep_pbt.py writes it: the loss L falls fastest at
lr = 0.1 * L, so a schedule beats any constant).

Each search gets the same budget of trial iterations: 4 configs (PBT: a population of 4) x 20
iterations, one seed, over --repeats (5) job seeds (each draws its own initial configs). Reported:
the sweep's best final score, next to the best constant learning rate there is (a fine grid
through the toy's formula) and the ideal schedule's score. All sweeps run through runyard's
driver in one embedded Ray of 2 CPUs, side by side in one run; the wall time of each is shown
too (PBT pauses and restores members).

    PYTHONPATH=platform python benchmarks/pbt_vs_random.py
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "tests"))
from _machine import describe  # noqa: E402
from test_sweep_pbt import ITERATIONS, PBT, constant_score, write_sweep  # noqa: E402

# name -> (sweep.search, the rest of the sweep block): PBT as the tests run it (half the
# population copies at each interval) and with Tune's default quarter.
SEARCHES = {"pbt-q0.5": ("pbt", PBT), "pbt-q0.25": ("pbt", "  pbt: {interval: 2}\n"),
            "random": ("random", ""), "tpe": ("tpe", "  startup: 2\n")}


def ideal_score(iterations: int = ITERATIONS) -> float:
    """The toy's score when every iteration runs at its best learning rate, 0.1 * L."""
    loss = 1.0
    for _ in range(iterations):
        loss *= 1 - 0.25
    return -math.log10(loss)


def run_sweep(workdir: Path, name: str, seed: int, uri: str) -> tuple[float, float]:
    """(best final score, seconds) of one sweep through runyard's driver."""
    from rich.console import Console

    from runyard.execute.job import run_job
    from runyard.execute.storage import Storage
    from runyard.plan import expand
    from runyard.spec import load_spec

    search, block = SEARCHES[name]
    path = write_sweep(workdir, f"{name}-{seed}", search, seeds=1, extra=block)
    spec = load_spec(path, [f"seed={seed}"])
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        outcome = run_job(spec, expand(spec), uri, workdir, Console(file=sink),
                          Storage(str(workdir / "results")))
    assert outcome.status == "FINISHED", outcome
    return outcome.best.value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import ray

    print(describe())
    best_constant = max(constant_score(10 ** (e / 40)) for e in range(-120, -39))
    print(f"toy: best constant lr scores {best_constant:.3f}, the ideal schedule "
          f"{ideal_score():.3f} ({ITERATIONS} iterations)")
    with tempfile.TemporaryDirectory(prefix="runyard-pbt-bench-") as folder:
        workdir = Path(folder)
        os.chdir(workdir)  # where the driver finds the toy workload
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        scores: dict[str, list[float]] = {name: [] for name in SEARCHES}
        seconds: dict[str, list[float]] = {name: [] for name in SEARCHES}
        for seed in range(args.repeats):
            for name in SEARCHES:
                score, elapsed = run_sweep(workdir, name, seed, uri)
                scores[name].append(score)
                seconds[name].append(elapsed)
                print(f"seed {seed} {name:9s} best score {score:.3f}  ({elapsed:.1f} s)",
                      flush=True)
        ray.shutdown()
    print("\n| search | best score per job seed | mean | seconds per sweep |")
    print("|---|---|---|---|")
    for name in SEARCHES:
        per_seed = ", ".join(f"{s:.3f}" for s in scores[name])
        print(f"| {name} | {per_seed} | {statistics.fmean(scores[name]):.3f} | "
              f"{statistics.fmean(seconds[name]):.1f} |")


if __name__ == "__main__":
    main()
