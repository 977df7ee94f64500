"""What a trial's checkpoint costs through runyard's storage: save and restore of a 100 MiB
state, next to a plain copy of the same bytes there and back, measured in one run here.

The trial is runyard's own. runyard's TuneRunner builds the Tune experiment at the storage's
tune path (execute/storage.py, what `--storage` sets), and runyard's trainable
(execute/trainable.py) runs the `Ballast` workload below, whose whole state is `--mb` MiB of
random bytes. At every iteration Tune saves: the workload writes its state into a local
temporary checkpoint, and Ray copies it to the storage through pyarrow. The trial fails once
at each iteration of `--fail-at`, and Tune starts it again from its latest checkpoint in the
storage (from a bucket it is downloaded first), as after a lost node. No MLflow.

Both are timed on the driver with Tune's public callbacks:
  save     from the trial's result (on_trial_result) to its persisted checkpoint
           (on_checkpoint): the workload's write, the copy to storage, one Ray call;
  restore  from the retried trial's new process being up (on_trial_start) to its next result,
           less that step's own time: the download (a bucket), the workload's read, two Ray
           calls.
A trial with a 1 KiB state, run the same way, shows what the Ray calls cost by themselves.
The baseline is the same bytes (the folder the workload writes) copied by `cp -r` into the
storage folder and back, or for a bucket by `pyarrow.fs.copy_files` with the settings Ray
uses, before and after each trial, medians of all. (The planned failures' tracebacks on
stderr are Tune's own report of each failed attempt.)

Rows: a folder on this machine's disk (what a shared mount looks like to a node), and
`s3://` against a moto S3 server started here on 127.0.0.1 (stopped at the end), when moto's
server is installed (`pip install -e '.[dev]'`); otherwise that row says why it is missing.

    PYTHONPATH=platform python benchmarks/checkpoint_cost.py [--mb 100] [--fail-at 2 4 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import Field

from _machine import describe
from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from runyard_testing import s3_bucket  # noqa: E402  (the tests' moto server)

BENCHMARKS = Path(__file__).resolve().parent
STATE_FILE, ITERATION_FILE, WORKLOAD_TIMES = "state.bin", "iteration", "workload-times.jsonl"
# How Ray copies a checkpoint to and from a bucket (ray.train._internal.storage): 64 MiB
# chunks, and no threads for an upload. pyarrow's default 1 MiB chunks took 14 s to download
# what these take under 2 s from moto.
RAY_COPY = {"chunk_size": 64 * 2**20}
SPEC = """\
name: checkpoint-cost
workload: checkpoint_cost:Ballast
config: {{mb: {mb}, fail_at: {fail_at}, scratch: {scratch}}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: 1, keep: 2}}
"""


class BallastConfig(WorkloadConfig):
    mb: float = Field(100.0, gt=0, description="size of the state, MiB")
    fail_at: tuple[int, ...] = Field((), description="iterations that fail once each, so that "
                                                     "Tune restores the trial from its checkpoint")
    scratch: str = Field(description="folder for the once-only failure markers and the "
                                     "workload's own save and restore times")


class Ballast(Workload):
    """A trial whose whole state is `mb` MiB of random bytes (incompressible, like weights);
    each step is instant, so the trial's time is its checkpoints'."""

    Config = BallastConfig
    metrics = {"iteration": "max"}

    def setup(self, config: BallastConfig, context: WorkloadContext) -> None:
        self.config = config
        self.scratch = Path(config.scratch)
        size = int(config.mb * 2**20)
        self.state = np.frombuffer(np.random.default_rng(context.seed).bytes(size), dtype=np.uint8)
        self.iteration = 0

    def step(self) -> dict[str, float]:
        self.iteration += 1
        marker = self.scratch / f"failed-at-{self.iteration}"
        if self.iteration in self.config.fail_at and not marker.exists():
            marker.touch()
            raise RuntimeError(f"planned failure at iteration {self.iteration}")
        return {"iteration": float(self.iteration)}

    def save(self, directory: Path) -> None:
        started = time.perf_counter()
        self.state.tofile(Path(directory) / STATE_FILE)
        (Path(directory) / ITERATION_FILE).write_text(str(self.iteration))
        self._log("save", time.perf_counter() - started)

    def restore(self, directory: Path) -> None:
        started = time.perf_counter()
        self.state = np.fromfile(Path(directory) / STATE_FILE, dtype=np.uint8)
        self.iteration = int((Path(directory) / ITERATION_FILE).read_text())
        self._log("restore", time.perf_counter() - started)

    def _log(self, operation: str, seconds: float) -> None:
        with open(self.scratch / WORKLOAD_TIMES, "a") as log:
            log.write(json.dumps({"op": operation, "s": seconds}) + "\n")


@dataclasses.dataclass
class TrialTimes:
    saves: list[float]
    restores: list[float]
    workload_saves: list[float]  # the workload's own write, inside each save
    workload_restores: list[float]


def checkpoint_callback():
    """A Tune callback that times every save and restore of the trial (module docstring)."""
    from ray import tune

    class CheckpointTimes(tune.Callback):
        def __init__(self) -> None:
            self.saves: list[float] = []
            self.restores: list[float] = []
            self.result_at = 0.0
            self.restarted_at: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            if trial.num_failures:  # a retry: Tune restores it from its latest checkpoint
                self.restarted_at = time.perf_counter()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.result_at = time.perf_counter()
            if self.restarted_at is not None:
                self.restores.append(self.result_at - self.restarted_at - result["time_this_iter_s"])
                self.restarted_at = None

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
            self.saves.append(time.perf_counter() - self.result_at)

    return CheckpointTimes()


def time_trial(storage_root: str, mb: float, iterations: int, fail_at: list[int],
               scratch: Path) -> TrialTimes:
    """Run one Ballast trial through runyard's TuneRunner with its state in `storage_root`,
    in the Ray session already open."""
    from runyard.execute.storage import Storage
    from runyard.execute.tune_runner import SearchSettings, TuneRunner
    from runyard.plan import expand
    from runyard.spec import load_spec

    scratch.mkdir(parents=True)
    spec_path = scratch / "ballast.yaml"
    spec_path.write_text(SPEC.format(mb=mb, fail_at=json.dumps(fail_at), scratch=json.dumps(str(scratch)),
                                     iterations=iterations))
    spec = load_spec(spec_path)
    settings = dataclasses.replace(SearchSettings.of(spec, dict(Ballast.metrics)), max_failures=len(fail_at))
    callback = checkpoint_callback()
    runner = TuneRunner(spec, settings, BENCHMARKS, [callback])
    tune_path = Storage(storage_root).tune_path(f"checkpoint-cost-{secrets.token_hex(3)}")
    fitted = runner.fit([runner.new(tune_path, expand(spec))])
    if fitted.error is not None:
        raise fitted.error
    if len(callback.saves) != iterations or len(callback.restores) != len(fail_at):
        raise RuntimeError(f"the trial did not run as planned: {len(callback.saves)} saves of "
                           f"{iterations}, {len(callback.restores)} restores of {len(fail_at)}")
    logged = [json.loads(line) for line in (scratch / WORKLOAD_TIMES).read_text().splitlines()]
    return TrialTimes(callback.saves, callback.restores,
                      [entry["s"] for entry in logged if entry["op"] == "save"],
                      [entry["s"] for entry in logged if entry["op"] == "restore"])


def plain_copies(storage_root: str, source: Path, rounds: int, scratch: Path) -> tuple[list[float], list[float]]:
    """Seconds to copy the folder `source` into the storage and back, `rounds` times each: `cp -r`
    for a folder, pyarrow's copy_files for a bucket (called as Ray calls it)."""
    from pyarrow import fs

    there, back = [], []
    for index in range(rounds):
        returned = scratch / f"back-{index}"
        if "://" in storage_root:
            bucket, inner = fs.FileSystem.from_uri(f"{storage_root}/plain-copy-{secrets.token_hex(3)}")
            started = time.perf_counter()
            fs.copy_files(str(source), inner, source_filesystem=fs.LocalFileSystem(), destination_filesystem=bucket,
                          use_threads=False, **RAY_COPY)
            there.append(time.perf_counter() - started)
            returned.mkdir()  # pyarrow makes the folders below it, not the folder itself
            started = time.perf_counter()
            fs.copy_files(inner, str(returned), source_filesystem=bucket, destination_filesystem=fs.LocalFileSystem(),
                          **RAY_COPY)
            back.append(time.perf_counter() - started)
            bucket.delete_dir(inner)
        else:
            stored = Path(storage_root) / f"plain-copy-{secrets.token_hex(3)}"
            stored.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            subprocess.run(["cp", "-r", str(source), str(stored)], check=True)
            there.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["cp", "-r", str(stored), str(returned)], check=True)
            back.append(time.perf_counter() - started)
            shutil.rmtree(stored)
        shutil.rmtree(returned)
    return there, back


@contextmanager
def moto_bucket(scratch: Path) -> Iterator[str]:
    """s3://bucket on the tests' moto S3 server on 127.0.0.1, its address and made-up
    credentials in this process's environment (Ray's workers, started later, inherit them);
    the server ends with the block."""
    with s3_bucket("127.0.0.1", "ckpt", scratch / "moto.log", timeout_s=60) as bucket:
        os.environ.update(bucket.env)
        yield f"s3://{bucket.name}/runyard"


def row(label: str, mb: float, trial: TrialTimes, there: list[float], back: list[float]) -> str:
    save, restore = statistics.median(trial.saves), statistics.median(trial.restores)
    cp_there, cp_back = statistics.median(there), statistics.median(back)
    return (f"| {label} | {mb:g} MiB | {save:.3f} s ({statistics.median(trial.workload_saves):.3f}) | "
            f"{restore:.3f} s ({statistics.median(trial.workload_restores):.3f}) | {cp_there:.3f} s | "
            f"{cp_back:.3f} s | **{save / cp_there:.2f}** | **{restore / cp_back:.2f}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="MiB of trial state (default 100)")
    parser.add_argument("--iterations", type=int, default=6,
                        help="iterations of the trial, each saved (default 6): the save samples")
    parser.add_argument("--fail-at", type=int, nargs="*", default=[2, 4, 6],
                        help="iterations that fail once, each then restored (default 2 4 6): the restore samples")
    parser.add_argument("--copies", type=int, default=3,
                        help="plain copies there and back, before and after each trial (default 3)")
    parser.add_argument("--no-s3", action="store_true", help="leave out the s3:// row")
    args = parser.parse_args()
    if any(not 1 <= at <= args.iterations for at in args.fail_at):
        parser.error("--fail-at: every iteration must be between 1 and --iterations")

    from runyard.launch import ray_session

    scratch = Path(tempfile.mkdtemp(prefix="runyard-checkpoint-cost-"))
    lines, missing, loads = [], [], [os.getloadavg()[0]]
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        storages = [("folder on this disk", str(scratch / "storage"))]
        if args.no_s3:
            missing.append("s3://: left out (--no-s3)")
        elif importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            missing.append("s3://: no moto server here (pip install 'moto[server]>=5.0', or the dev extra)")
        else:  # before Ray starts: its workers inherit the bucket's settings
            storages.append(("`s3://` (moto server, 127.0.0.1)", cleanup.enter_context(moto_bucket(scratch))))
        # The folder the plain copies move: what the workload writes for a checkpoint.
        source = scratch / "source"
        source.mkdir()
        workload = Ballast()
        workload.setup(BallastConfig(mb=args.mb, scratch=str(scratch)), WorkloadContext())
        workload.save(source)
        with ray_session(num_cpus=2):
            for index, (label, root) in enumerate(storages):
                try:
                    there, back = plain_copies(root, source, args.copies, scratch)
                    trial = time_trial(root, args.mb, args.iterations, args.fail_at, scratch / f"trial-{index}")
                    more_there, more_back = plain_copies(root, source, args.copies, scratch)
                    lines.append(row(label, args.mb, trial, there + more_there, back + more_back))
                    if index == 0:  # the fixed cost, on the folder only
                        tiny = time_trial(root, 1 / 1024, args.iterations, args.fail_at, scratch / "trial-tiny")
                        lines.append(f"| {label}, Ray's calls alone | 1 KiB | {statistics.median(tiny.saves):.3f} s "
                                     f"| {statistics.median(tiny.restores):.3f} s | | | | |")
                except Exception as error:  # noqa: BLE001 — the row says what broke, the others still run
                    first_line = (str(error).splitlines() or [""])[0][:200]
                    lines.append(f"| {label} | {args.mb:g} MiB | failed: {type(error).__name__}: {first_line} "
                                 "| | | | | |")
                loads.append(os.getloadavg()[0])
    print(f"machine: {describe()}")
    print(f"1-minute load average during the rows: {' → '.join(f'{load:.1f}' for load in loads)}")
    print(f"{args.iterations} saves and {len(args.fail_at)} restores per trial, {2 * args.copies} plain "
          "copies each way per row; medians (in brackets: the workload's own write or read)")
    print()
    print("| storage | state | save | restore | copy there | copy back | save / copy | restore / copy |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    for line in missing:
        print(f"\n{line}")


if __name__ == "__main__":
    main()
