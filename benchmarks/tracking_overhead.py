"""What tracking adds to a trial's wall time: runyard's batched writer vs one
`mlflow.log_metric` request per value, against the same MLflow store, side by side.

The trial: 500 iterations, each a real bit of work (a few steps of a small torch model),
reporting 20 metrics. Three variants run in alternation: no tracking at all, runyard's
tracking (TrackingWriter: batched, on a background thread), and per-value log_metric calls.
Overhead = variant / untracked - 1.

    python benchmarks/tracking_overhead.py [--iterations 500] [--metrics 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch

from runyard.tracking.store import JobTracking, quiet_mlflow


def make_work():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 256), torch.randint(0, 10, (256,))

    def work() -> float:
        for _ in range(4):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        return loss.item()

    return work


def trial(iterations: int, metric_count: int, report) -> float:
    work = make_work()
    started = time.perf_counter()
    for step in range(iterations):
        loss = work()
        report({f"metric_{i}": loss * (i + 1) for i in range(metric_count)}, step)
    return time.perf_counter() - started


def untracked(args, uri: str) -> float:
    return trial(args.iterations, args.metrics, lambda metrics, step: None)


def with_runyard(args, uri: str) -> float:
    tracking = JobTracking(uri, "tracking-overhead")
    run = tracking.start_run("runyard", {}, {})
    started = time.perf_counter()
    trial(args.iterations, args.metrics, lambda metrics, step: tracking.writer.log_metrics(run, metrics, step))
    tracking.writer.end_run(run, "FINISHED")
    tracking.close()  # the trial's figure includes delivering every value
    return time.perf_counter() - started


def per_value(args, uri: str) -> float:
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("tracking-overhead")
    with mlflow.start_run():
        def report(metrics, step):
            for key, value in metrics.items():
                mlflow.log_metric(key, value, step=step)
        return trial(args.iterations, args.metrics, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet_mlflow()
    torch.set_num_threads(1)
    variants = {"untracked": untracked, "runyard": with_runyard, "log_metric": per_value}
    times = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        uri = f"sqlite:///{Path(scratch) / 'mlflow.db'}"
        JobTracking(uri, "tracking-overhead").close()  # create the store before timing
        for _ in range(args.repeats):
            for name, variant in variants.items():
                times[name].append(variant(args, uri))
    base = statistics.median(times["untracked"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; store: local SQLite")
    print(f"{args.iterations} iterations x {args.metrics} metrics, {args.repeats} alternating repeats")
    print(f"{'variant':<12}{'median s':>10}{'overhead':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12}{median:>10.2f}{(median / base - 1) * 100:>9.1f}%")
    print("target: runyard < 2%")


if __name__ == "__main__":
    main()
