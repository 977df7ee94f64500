"""Seconds to a submitted job's first trial result on a Ray cluster: `runyard submit` with
runyard shipped to the cluster (as the job's py_modules, as submit does now) vs the same
submission without it (the nodes' installed runyard, as before), and `runyard resume` of a
stopped submitted job vs its own submit. Measured in one run here, on a `runyard cluster
local up` cluster (head + 1 worker, token auth, basic-auth MLflow server).

Submit: a toy sweep (toy.quadratic, 2 trials, 3 steps of 0.1 s) is submitted through
runyard.api.submit, the function behind `runyard submit` (no CLI start-up), in three ways,
their order rotated each round after one uncounted warm-up:
  not shipped         the job without py_modules: the driver and the trials import the
                      runyard the nodes have;
  shipped, unchanged  as submit does now, this runyard as py_modules; the cluster has it from
                      the submit before (a package is uploaded and unpacked once per content);
  shipped, edited     as now, after an edit: a copy of this runyard with one file changed,
                      so the package is new and is uploaded and unpacked on every node.
Resume: a checkpointing toy sweep (2 trials, 20 steps of 0.5 s, checkpoint every 2) is
submitted with a --storage folder, stopped (`runyard stop`) once both trials have
checkpointed, then continued with runyard.api.continue_on_cluster, the function behind
`runyard resume JOB --address URL`: a new driver on the cluster that finds the job in the
storage.
"First result" is the earliest `score` point of the job's trial runs in the cluster's MLflow
server, stamped by the driver when the result reaches it (for a resume: the earliest after
the resume call); it is read once the job has ended, so polling adds nothing.

    PYTHONPATH=platform python benchmarks/cluster_first_result.py [--rounds 3] [--resumes 2]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import statistics
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock

from _machine import describe

from runyard import api
from runyard.launch import jobs_api, local_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from runyard_testing import toy_sweep  # noqa: E402  (the tests' quick sweep)

QUICK = toy_sweep("first-result", "first-result", 0.1, 3, every=0)  # 0: only at the end
CHECKPOINTING = toy_sweep("resume-first-result", "first-result", 0.5, 20, every=2)
# Each way of submitting: its name in job ids, its row in the table.
NOT_SHIPPED, UNCHANGED, EDITED = "not-shipped", "shipped", "edited"
ROWS = {NOT_SHIPPED: "not shipped: the nodes' runyard (before)",
        UNCHANGED: "shipped, unchanged since the last submit (now)",
        EDITED: "shipped, after an edit: a new package (now)"}


@contextmanager
def shipping(py_modules: tuple[Path, ...]) -> Iterator[None]:
    """Within the block, `api.submit` uploads `py_modules` in place of this runyard (none: ())."""
    upload = jobs_api.submit

    def submit(*args, **kwargs):
        return upload(*args, **{**kwargs, "py_modules": py_modules})

    with mock.patch.object(jobs_api, "submit", submit):
        yield


def edited_runyard(scratch: Path) -> Path:
    """A copy of this runyard with one file that no copy before had: a new package to Ray."""
    import runyard

    copy = scratch / f"edit-{secrets.token_hex(3)}" / "runyard"
    shutil.copytree(Path(runyard.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "EDITED").write_text(f"{time.time()}\n")
    return copy


def trial_points(client, job_id: str) -> dict[str, tuple[str, list[int]]]:
    """Each trial run of the job: its status and the timestamps (ms) of its `score` points."""
    experiment = client.get_experiment_by_name("first-result")
    runs = client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`runyard.sweep_id` = '{job_id}' and tags.`runyard.kind` = 'trial'"))
    return {run.info.run_id: (run.info.status, [point.timestamp for point in
                                                client.get_metric_history(run.info.run_id, "score")])
            for run in runs}


def first_result(client, job_id: str, after_s: float) -> float:
    """Seconds from `after_s` (a time.time()) to the job's first `score` point after it."""
    stamps = [stamp for _, points in trial_points(client, job_id).values() for stamp in points
              if stamp >= after_s * 1000]
    if not stamps:
        raise RuntimeError(f"job {job_id}: no trial result after the start in MLflow")
    return min(stamps) / 1000 - after_s


def ended(cluster: local_cluster.LocalCluster, job_id: str, expected: str, timeout_s: float = 300) -> None:
    state = jobs_api.wait(job_id, cluster.jobs_address, timeout_s=timeout_s)
    if state != expected:
        log = "".join(jobs_api.logs(job_id, cluster.jobs_address))
        raise RuntimeError(f"job {job_id} ended {state}, not {expected}:\n{log[-3000:]}")


def submit_to_first_result(cluster, client, how: str, scratch: Path) -> float:
    job_id = f"first-{how}-{secrets.token_hex(3)}"
    with ExitStack() as stack:
        if how == NOT_SHIPPED:
            stack.enter_context(shipping(()))
        elif how == EDITED:
            stack.enter_context(shipping((edited_runyard(scratch),)))
        started = time.time()
        api.submit("jobs/quick.yaml", address=cluster.jobs_address, job_id=job_id)
    ended(cluster, job_id, "SUCCEEDED")
    return first_result(client, job_id, started)


def resume_to_first_result(cluster, client, storage: Path) -> tuple[float, float]:
    """(submit → first result, resume → first new result) of one stopped checkpointing sweep."""
    job_id = f"resume-{secrets.token_hex(3)}"
    submitted = time.time()
    api.submit("jobs/checkpointing.yaml", address=cluster.jobs_address, job_id=job_id, storage=str(storage))
    tune_dir = storage / "ray_results" / job_id
    deadline = time.monotonic() + 300
    while len({path.parent for path in tune_dir.glob("t000*/checkpoint_*")}) < 2:
        if time.monotonic() > deadline or jobs_api.status(job_id, cluster.jobs_address).status.is_terminal():
            raise RuntimeError(f"job {job_id}: both trials never checkpointed")
        time.sleep(0.5)
    jobs_api.stop(job_id, cluster.jobs_address)
    ended(cluster, job_id, "STOPPED", timeout_s=120)
    resumed = time.time()
    continued = api.continue_on_cluster(api.ContinueRequest(job_id, "resume", address=cluster.jobs_address,
                                                            storage=str(storage)))
    ended(cluster, continued.job_id, "SUCCEEDED")
    statuses = {status for status, _ in trial_points(client, job_id).values()}
    if statuses != {"FINISHED"}:
        raise RuntimeError(f"job {job_id}: after the resume its trial runs are {statuses}")
    return first_result(client, job_id, submitted), first_result(client, job_id, resumed)


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three submissions (default 3)")
    parser.add_argument("--resumes", type=int, default=2, help="sweeps submitted, stopped and resumed (default 2)")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    scratch = Path(tempfile.mkdtemp(prefix="runyard-first-result-"))
    project = scratch / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "quick.yaml").write_text(QUICK)
    (project / "jobs" / "checkpointing.yaml").write_text(CHECKPOINTING)
    for name in ("RAY_ADDRESS", "RUNYARD_STORAGE", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    os.chdir(project)  # what submit ships: the project, as from a researcher's checkout
    # A `timeout` or kill ends the run through the cleanup below, which stops the cluster.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    times: dict[str, list[float]] = {NOT_SHIPPED: [], UNCHANGED: [], EDITED: []}
    resumes: list[tuple[float, float]] = []
    loads = {"start": load()}
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        started = time.monotonic()
        cluster = local_cluster.up(workers=1, state_dir=scratch / "state", storage_dir=scratch / "storage",
                                   echo=lambda _: None)
        cleanup.callback(local_cluster.down, cluster, echo=lambda _: None)
        up_s = time.monotonic() - started
        os.environ["RAY_AUTH_TOKEN_PATH"] = cluster.token_path
        os.environ.update(cluster.tracking_env())  # the MLflow client's credentials
        client = MlflowClient(cluster.tracking_uri)

        submit_to_first_result(cluster, client, UNCHANGED, scratch)  # warm-up: the package, the workers
        order = list(times)
        for round_index in range(args.rounds):
            rotated = order[round_index % len(order):] + order[:round_index % len(order)]
            for how in rotated:
                times[how].append(submit_to_first_result(cluster, client, how, scratch))
                print(f"round {round_index + 1}, {how}: {times[how][-1]:.2f} s, load {load()}", flush=True)
        loads["after submits"] = load()
        for index in range(args.resumes):
            resumes.append(resume_to_first_result(cluster, client, scratch / "storage"))
            print(f"sweep {index + 1}: submit {resumes[-1][0]:.2f} s, resume {resumes[-1][1]:.2f} s, "
                  f"load {load()}", flush=True)
        loads["after resumes"] = load()

    print(f"machine: {describe()}")
    print(f"load average (1/5/15 min): {', '.join(f'{when} {value}' for when, value in loads.items())}")
    print(f"local cluster: head (2 CPUs) + 1 worker (1 CPU), up in {up_s:.1f} s")
    print()
    print(f"`runyard submit` → first trial result, {args.rounds} rounds, order rotated")
    print()
    print("| submission | median | rounds | ratio to not shipped |")
    print("|---|---|---|---|")
    baseline = statistics.median(times[NOT_SHIPPED])
    for how, values in times.items():
        print(f"| {ROWS[how]} | {statistics.median(values):.2f} s | {', '.join(f'{v:.2f}' for v in values)} | "
              f"**{statistics.median(values) / baseline:.2f}** |")
    print()
    print(f"`runyard resume` of a stopped submitted sweep → its first new result, {args.resumes} sweeps")
    print()
    print("| from | median | sweeps | ratio |")
    print("|---|---|---|---|")
    submit_median = statistics.median(s for s, _ in resumes)
    resume_median = statistics.median(r for _, r in resumes)
    print(f"| `submit` (the sweep's start) | {submit_median:.2f} s | {', '.join(f'{s:.2f}' for s, _ in resumes)} | 1.00 |")
    print(f"| `resume` after `stop` | {resume_median:.2f} s | {', '.join(f'{r:.2f}' for _, r in resumes)} | "
          f"**{resume_median / submit_median:.2f}** |")


if __name__ == "__main__":
    main()
