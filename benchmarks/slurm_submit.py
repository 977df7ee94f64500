"""Seconds from `runyard submit --slurm` to a job's first trial result, and where they go, on
the 2-host local Slurm (`runyard cluster local up --hosts 2 --slurm`; root, Linux): the
submit call itself (plan, snapshot, sbatch), Slurm starting the batch script, the job's own
Ray starting on both nodes (head, worker, every node joined), and the driver to its first
result. Then one wall-time continuation: a sweep submitted with --time 00:02:00 --stop-lead 45
is stopped by Slurm's signal and requeued; from the requeue to the new allocation, to its Ray,
and to its first new result.

Submit: a toy sweep (toy.quadratic, 2 trials, 3 steps of 0.1 s, checkpoint at the end) through
runyard.api.slurm.submit, the function behind `runyard submit --slurm` (no CLI start-up),
`--rounds` times, one job after the other; the first round is a warm-up, not counted.
The batch script stamps its output (UTC, ms) at its start, once the job's Ray is up, and at a
requeue; "first result" is the earliest `score` point of the job's trial runs in the cluster's
MLflow server (stamped by the driver as the result reaches it), read once the job has ended.

    sudo PYTHONPATH=platform python benchmarks/slurm_submit.py [--rounds 4] [--no-wall-time]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, chdir
from datetime import datetime
from pathlib import Path

from _machine import describe

from runyard.api import slurm as slurm_api
from runyard.launch import local_cluster, slurm_hosts
from runyard.launch.slurm import ACTIVE_STATES, SlurmOptions, job_fields
from runyard.processes import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from runyard_testing import toy_sweep  # noqa: E402  (the tests' quick sweep)

EXPERIMENT = "slurm-first-result"
QUICK = toy_sweep("slurm-first", EXPERIMENT, 0.1, 3, every=0)
# Trials start 20-35 s into the allocation and need 60+ s: Slurm's signal (45-75 s in) stops them.
LONG = toy_sweep("slurm-wall-time", EXPERIMENT, 1.0, 60, every=5)
STAMPED = re.compile(r"^runyard: (allocation|the job's Ray is up|stopped before the wall time).* at (\S+Z)$")


def stamps(output: Path) -> list[tuple[str, float]]:
    """The batch script's stamped lines in the job's output, in order: (kind, seconds since epoch)."""
    found = []
    for line in output.read_text(errors="replace").splitlines():
        matched = STAMPED.match(line)
        if matched:
            found.append((matched.group(1), datetime.fromisoformat(matched.group(2).replace("Z", "+00:00")).timestamp()))
    return found


def result_stamps(client, job_id: str) -> list[float]:
    """Every `score` point's time (s since epoch) of the job's trial runs."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=(
        f"tags.`runyard.sweep_id` = '{job_id}' and tags.`runyard.kind` = 'trial'"))
    return sorted(point.timestamp / 1000 for run in runs
                  for point in client.get_metric_history(run.info.run_id, "score"))


def finish(job: slurm_api.SlurmJob, timeout_s: float) -> None:
    def ended() -> str | None:
        # None while Slurm still holds it, or when scontrol did not answer (a loaded machine).
        state = job_fields(job.slurm_job_id).get("JobState")
        return None if state in (None, *ACTIVE_STATES, "COMPLETING") else state

    wait_until(ended, timeout_s, lambda: f"Slurm job {job.slurm_job_id} did not end within {timeout_s:.0f} s", 1.0)
    state = ended()
    if state != "COMPLETED":
        raise RuntimeError(f"job {job.job_id} ended {state}:\n{job.output.read_text()[-3000:]}")


def submit_round(storage: Path, options: SlurmOptions, client) -> dict[str, float]:
    job_id = f"slurm-first-{secrets.token_hex(3)}"
    started = time.time()
    submitted = slurm_api.submit("jobs/quick.yaml", options=options, job_id=job_id, storage=str(storage))
    submit_s = time.time() - started
    finish(submitted.job, 300)
    (_, allocated), (_, ray_up) = stamps(submitted.job.output)[:2]
    first = result_stamps(client, job_id)[0]
    return {"submit call (plan, snapshot, sbatch)": submit_s, "sbatch -> batch script starts": allocated - started,
            "the job's Ray on 2 nodes (head, worker, joined)": ray_up - allocated,
            "Ray up -> first trial result": first - ray_up, "submit -> first trial result": first - started}


def wall_time_round(storage: Path, options: SlurmOptions, client) -> dict[str, float]:
    job_id = f"slurm-wall-{secrets.token_hex(3)}"
    long = dataclasses.replace(options, time="00:02:00", stop_lead_s=45)
    submitted = slurm_api.submit("jobs/long.yaml", options=long, job_id=job_id, storage=str(storage))
    # The first allocation's trials end KILLED; the requeued one may be stopped again: no matter.
    finish(submitted.job, 600)
    seen = stamps(submitted.job.output)
    requeues = [at for kind, at in seen if kind.startswith("stopped")]
    if not requeues:
        raise RuntimeError(f"job {job_id} was never requeued:\n{submitted.job.output.read_text()[-4000:]}")
    requeued = requeues[0]
    again, ray_up = [at for kind, at in seen if at > requeued][:2]
    first = next(at for at in result_stamps(client, job_id) if at > requeued)
    return {"requeue -> the new allocation starts": again - requeued, "the job's Ray on 2 nodes": ray_up - again,
            "Ray up -> first new trial result": first - ray_up, "requeue -> first new trial result": first - requeued}


def table(title: str, rounds: list[dict[str, float]]) -> None:
    print(f"\n{title} ({len(rounds)} round{'s' if len(rounds) != 1 else ''}): median [min, max] s")
    for row in rounds[0]:
        values = [measured[row] for measured in rounds]
        print(f"  {row:<52} {statistics.median(values):6.1f}  [{min(values):.1f}, {max(values):.1f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="submit rounds, the first uncounted")
    parser.add_argument("--no-wall-time", action="store_true", help="skip the wall-time continuation")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    print(describe())
    with ExitStack() as cleanup:
        scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="slurm-bench-")))
        up_started = time.time()
        cluster = local_cluster.up(hosts=2, slurm=True, state_dir=scratch / "state", echo=lambda _: None)
        cleanup.callback(local_cluster.down, scratch / "state", echo=lambda _: None)
        print(f"local Slurm up: {time.time() - up_started:.1f} s")
        os.environ.update({**slurm_hosts.slurm_env(cluster), **cluster.tracking_env()})
        os.environ.pop("RUNYARD_STORAGE", None)
        client = MlflowClient(cluster.tracking_uri)
        project = scratch / "project"
        (project / "jobs").mkdir(parents=True)
        (project / "jobs" / "quick.yaml").write_text(QUICK)
        (project / "jobs" / "long.yaml").write_text(LONG)
        options = SlurmOptions(nodes=2, setup=f"source {Path(sys.prefix) / 'bin' / 'activate'}")
        storage = Path(cluster.storage_dir)
        with chdir(project):
            measured = [submit_round(storage, options, client) for _ in range(args.rounds)]
            table("runyard submit --slurm --nodes 2 -> first result", measured[1:] or measured)
            if not args.no_wall_time:
                table("wall time: requeued -> first new result", [wall_time_round(storage, options, client)])
        print(f"load average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
