"""A sweep through runyard vs the same sweep on bare Ray Tune, side by side in one Ray session.

64 trials (issue 5's random search) of a workload that sleeps 1 s per step, 1 step each, on
2 CPUs. runyard's figure includes everything it adds on top of Tune: its trainable wrapper, a
final checkpoint per trial, one MLflow child run per trial plus a parent, params, tags and
artifacts, the ledger, the sweep's plots and its progress display. Bare Tune runs a class
trainable that sleeps 1 s, with reuse_actors=True. The two alternate, `--repeats` times each,
in swapped order every other repeat (bare first, then runyard first: this shared machine's
load drifts), and the ratio of medians is reported.

Each repeat's MLflow store is created before the clock starts, as it exists in a project
that has run anything before; creating one (MLflow's schema migrations) happens once per
project and is reported on its own line.

    python benchmarks/sweep_overhead.py [--trials 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ray import tune

# runyard is imported inside the functions that use it, so that bare Tune's trial processes,
# which may import this module for SleepOnce, load nothing of runyard's.

SPEC = """\
name: sweep-overhead
workload: toy.quadratic
config: {{sleep_s: 1.0}}
stop: {{iterations: 1}}
sweep:
  samples: {trials}
  metric: score
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


class SleepOnce(tune.Trainable):
    def setup(self, config):
        self.x = config["x"]

    def step(self):
        time.sleep(1.0)
        return {"score": 1.0 - (self.x - 0.3) ** 2, "done": True}

    def reset_config(self, new_config):
        self.x = new_config["x"]
        return True

    def save_checkpoint(self, checkpoint_dir):
        return {"x": self.x}

    def load_checkpoint(self, checkpoint):
        self.x = checkpoint["x"]


def bare_tune(trials: int, storage: Path) -> float:
    started = time.perf_counter()
    tune.Tuner(
        tune.with_resources(SleepOnce, {"cpu": 1}),
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    ).fit()
    return time.perf_counter() - started


def create_store(workdir: Path) -> tuple[str, float]:
    """A project's MLflow store, as the first command run in it leaves it."""
    from runyard.tracking.store import JobTracking

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    started = time.perf_counter()
    JobTracking(uri, "sweep-overhead").close()
    return uri, time.perf_counter() - started


def through_runyard(trials: int, workdir: Path, uri: str) -> float:
    from rich.console import Console

    from runyard.execute.job import run_job
    from runyard.execute.storage import Storage
    from runyard.plan import expand
    from runyard.spec import load_spec

    spec_path = workdir / "sweep.yaml"
    spec_path.write_text(SPEC.format(trials=trials) + "tracking: {experiment: sweep-overhead}\n")
    spec = load_spec(spec_path)
    started = time.perf_counter()
    outcome = run_job(spec, expand(spec), uri, workdir,
                      Console(file=open(os.devnull, "w")), Storage(str(workdir / "results")))
    elapsed = time.perf_counter() - started
    assert outcome.status == "FINISHED", outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from runyard.launch import ray_session

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    times = {"bare Tune": [], "runyard": []}
    store_s = []
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        for repeat in range(args.repeats):
            workdir = Path(scratch) / f"r{repeat}"
            workdir.mkdir()
            uri, seconds = create_store(workdir)
            store_s.append(seconds)
            runs = {"bare Tune": lambda: bare_tune(args.trials, workdir / "bare"),
                    "runyard": lambda: through_runyard(args.trials, workdir, uri)}
            for name in (list(runs) if repeat % 2 == 0 else list(runs)[::-1]):
                times[name].append(runs[name]())
    bare, ours = (statistics.median(times[k]) for k in ("bare Tune", "runyard"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Ray with 2 CPUs")
    print(f"{args.trials} trials x 1 step of 1 s sleep, {args.repeats} repeats, order swapped each")
    print(f"{'path':<12}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<12}{statistics.median(values):>10.1f}   {', '.join(f'{v:.1f}' for v in values)}")
    print(f"ratio runyard / bare Tune: {ours / bare:.3f}  (target <= 1.10)")
    print(f"creating a project's MLflow store (once, not in the ratio): "
          f"{statistics.median(store_s):.1f} s")


if __name__ == "__main__":
    main()
