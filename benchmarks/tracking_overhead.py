"""What tracking adds to a trial's wall time, as runyard runs trials: the trial is a Ray Tune
actor and its results reach MLflow from the driver, whose Tune loop calls the tracking
callback before it asks the trial for its next iteration. A slow callback therefore stalls
training; that is the cost measured here.

One trial: 500 iterations, each a real bit of work (a few steps of a small torch model,
~20 ms), reporting 20 metrics. Three variants run in one Ray session, side by side:
  untracked    no tracking callback
  runyard      runyard's TrackingCallback (the batching background writer)
  log_metric   a callback that calls MlflowClient.log_metric once per value
all against the same local SQLite MLflow store. Overhead = trial wall time / untracked - 1.
runyard's writer delivers what is still queued after the trial ends; that is reported apart.

    python benchmarks/tracking_overhead.py [--iterations 500] [--metrics 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient
from ray import tune

from runyard.execute.tracking_callback import TrackingCallback
from runyard.launch import ray_session
from runyard.tracking.store import JobTracking, quiet_mlflow


class Work(tune.Trainable):
    """A trial doing real work each iteration and reporting `metrics` values."""

    def setup(self, config):
        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.metric_count = config["metrics"]
        self.model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                         torch.nn.Linear(256, 10))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.x, self.y = torch.randn(256, 256), torch.randint(0, 10, (256,))

    def step(self):
        for _ in range(8):
            self.optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.optimizer.step()
        return {f"metric_{i}": loss.item() * (i + 1) for i in range(self.metric_count)}


class PerValue(tune.Callback):
    """What tracking looks like without batching: one request per value."""

    def __init__(self, uri: str, run_id: str, names: list[str]):
        self.uri, self.run_id, self.names = uri, run_id, names

    def on_trial_result(self, iteration, trials, trial, result, **info):
        client = MlflowClient(self.uri)
        for name in self.names:
            client.log_metric(self.run_id, name, result[name], step=result["training_iteration"])


def fit(iterations: int, metrics: int, callbacks: list, storage: Path) -> float:
    trial = {"trial_id": "t0000", "label": "bench", "seed": 0, "sample": 0, "config": {}}
    started = time.perf_counter()
    tune.Tuner(
        tune.with_resources(Work, {"cpu": 1}),
        param_space={"metrics": metrics, "trial": trial},
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0, callbacks=callbacks,
                                  stop={"training_iteration": iterations}),
    ).fit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--metrics", type=int, default=20)
    args = parser.parse_args()
    quiet_mlflow()
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    names = [f"metric_{i}" for i in range(args.metrics)]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        uri = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
        times["untracked"] = fit(args.iterations, args.metrics, [], Path(scratch) / "a")

        tracking = JobTracking(uri, "tracking-overhead")
        run = tracking.start_run("runyard", {}, {})
        callback = TrackingCallback(tracking, None, {}, {}, {}, set(names), existing={"t0000": run})
        times["runyard"] = fit(args.iterations, args.metrics, [callback], Path(scratch) / "b")
        drained = time.perf_counter()
        tracking.close()
        times["runyard: delivery after the trial"] = time.perf_counter() - drained

        run_id = JobTracking(uri, "tracking-overhead").start_run("per-value", {}, {}).id
        times["log_metric"] = fit(args.iterations, args.metrics,
                                  [PerValue(uri, run_id, names)], Path(scratch) / "c")
    base = times["untracked"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; store: local SQLite; Ray, 2 CPUs")
    print(f"one Tune trial: {args.iterations} iterations x {args.metrics} metrics")
    print(f"{'variant':<36}{'seconds':>9}{'overhead':>10}")
    for name, seconds in times.items():
        overhead = "" if "delivery" in name else f"{(seconds / base - 1) * 100:9.1f}%"
        print(f"{name:<36}{seconds:>9.2f}{overhead:>10}")
    print("target: runyard < 2%")


if __name__ == "__main__":
    main()
