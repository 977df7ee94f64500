"""A sweep through runyard vs the same sweep on bare Ray Tune, side by side in one Ray session.

32 trials of a workload that sleeps 1 s per step, 1 step each, on 2 CPUs. runyard's figure
includes everything it adds on top of Tune: its trainable wrapper, one MLflow child run per
trial plus a parent, params, tags and artifacts, and its progress display. Bare Tune runs a
class trainable that sleeps 1 s, with reuse_actors=True. The two alternate, `--repeats` times
each, and the ratio of medians is reported.

    python benchmarks/sweep_overhead.py [--trials 32] [--repeats 2]
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
from rich.console import Console

from runyard.execute import run_job
from runyard.launch import ray_session
from runyard.plan import expand
from runyard.spec import load_spec

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


def through_runyard(trials: int, workdir: Path) -> float:
    spec_path = workdir / "sweep.yaml"
    spec_path.write_text(SPEC.format(trials=trials))
    spec = load_spec(spec_path)
    started = time.perf_counter()
    outcome = run_job(spec, expand(spec), f"sqlite:///{workdir / 'mlflow.db'}", workdir,
                      Console(file=open(os.devnull, "w")), storage_root=workdir / "results")
    elapsed = time.perf_counter() - started
    assert outcome.status == "FINISHED", outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    times = {"bare Tune": [], "runyard": []}
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        for repeat in range(args.repeats):
            workdir = Path(scratch) / f"r{repeat}"
            workdir.mkdir()
            times["bare Tune"].append(bare_tune(args.trials, workdir / "bare"))
            times["runyard"].append(through_runyard(args.trials, workdir))
    bare, ours = (statistics.median(times[k]) for k in ("bare Tune", "runyard"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Ray with 2 CPUs")
    print(f"{args.trials} trials x 1 step of 1 s sleep, {args.repeats} alternating repeats")
    print(f"{'path':<12}{'median s':>10}   all runs")
    for name, values in times.items():
        print(f"{name:<12}{statistics.median(values):>10.1f}   {', '.join(f'{v:.1f}' for v in values)}")
    print(f"ratio runyard / bare Tune: {ours / bare:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
