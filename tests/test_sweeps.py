"""Sweeps you can trust: resume after a SIGKILL, re-run of failed trials, extend, ASHA,
promote and the queue — each against a real embedded Ray and a real MLflow store."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import (RUNYARD, children_of, ledger_of, ledgers, run_cli,
                             sigkill_at_checkpoint, start_cli, tracking_uri, wait_for_checkpoint)
from runyard.spec import load_spec

pytestmark = pytest.mark.slow

TOY_SWEEP = """\
name: {name}
workload: toy.quadratic
config: {{sleep_s: {sleep}}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: {every}, keep: 2}}
tracking: {{experiment: toy}}
sweep:
  samples: {samples}
  metric: score
  max_concurrent: {concurrent}
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def write_toy(directory: Path, name: str = "toy", sleep: float = 0.0, iterations: int = 3,
              every: int = 1, samples: int = 2, concurrent: int = 2, extra: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(TOY_SWEEP.format(name=name, sleep=sleep, iterations=iterations, every=every,
                                     samples=samples, concurrent=concurrent) + extra)
    return path


def steps(client: MlflowClient, run_id: str, metric: str = "score") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def test_resume_after_sigkill_continues_every_trial_in_its_own_run(workdir: Path):
    spec = write_toy(workdir, "killed", sleep=0.6, iterations=8, every=2, samples=4)
    driver = start_cli("run", str(spec), "--id", "killed", cwd=workdir)
    # Once some trial has checkpointed at least twice, a lost machine.
    sigkill_at_checkpoint(driver, workdir / ".runyard" / "ray_results", "killed/t*/checkpoint_000001")

    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, "killed")
    before = children_of(client, ledger.run_id)
    assert any(run.info.status == "RUNNING" for run in before)

    # `ls` looks at them: the runs of the dead driver are marked FAILED, with the reason.
    listing = run_cli("ls", cwd=workdir)
    assert listing.returncode == 0
    reconciled = client.get_run(ledger.run_id)
    assert reconciled.info.status == "FAILED"
    assert "is gone" in reconciled.data.tags["runyard.error"]

    # A ledger learns its run's id as Tune starts (the writer makes the run off the driver's
    # path): one whose driver died before that finds its run again by the job's id.
    ledger_file = workdir / ".runyard" / "sweeps" / "killed.json"
    ledger_file.write_text(ledger_file.read_text().replace(ledger.run_id, ""))
    assert ledger_of(workdir, "killed").run_id == ""
    result = run_cli("resume", "killed", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ledger_of(workdir, "killed").run_id == ledger.run_id

    after = children_of(client, ledger.run_id)
    assert len(after) == 4
    assert sorted(r.data.tags["runyard.trial_id"] for r in after) == ["t0000", "t0001", "t0002", "t0003"]
    assert all(r.info.status == "FINISHED" for r in after)
    assert client.get_run(ledger.run_id).info.status == "FINISHED"
    for run in after:
        # Exactly once per step for every metric, whether the trial had checkpointed before
        # the kill (it replays the iterations after its checkpoint) or not (it starts over).
        for metric in ("score", "distance", "training_iteration", "time_total_s"):
            assert steps(client, run.info.run_id, metric) == list(range(1, 9)), (run.info.run_name, metric)


def test_sigterm_ends_the_sweep_with_its_state_written_after_its_last_checkpoint(workdir: Path):
    """Tune writes its experiment state only every few checkpoints (`keep` of them) while it
    deletes older ones: a SIGTERM (`runyard stop`, a scheduler) must end the run the way
    Ctrl-C does, writing that state one last time, or resume can ask for a checkpoint that
    `keep` has already deleted."""
    from runyard.ray_compat import experiment_trials

    spec = write_toy(workdir, "termed", sleep=0.25, iterations=60, samples=1)
    spec.write_text(spec.read_text().replace("keep: 2", "keep: 5"))
    driver = start_cli("run", str(spec), "--id", "termed", cwd=workdir)
    results = workdir / ".runyard" / "ray_results" / "termed"
    wait_for_checkpoint(driver, results, "t0000/checkpoint_000020")
    driver.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) != 0

    newest = max(int(path.name.rsplit("_", 1)[1]) for path in results.glob("t0000/checkpoint_*"))
    ((_, runtime),) = experiment_trials(results)
    assert runtime["last_result"]["training_iteration"] >= newest + 1  # checkpoint_000000 is iteration 1
    result = run_cli("resume", "termed", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri(workdir))
    (child,) = children_of(client, ledger_of(workdir, "termed").run_id)
    assert child.info.status == "FINISHED" and steps(client, child.info.run_id) == list(range(1, 61))


def test_rerun_failed_reruns_exactly_the_failed_trials(workdir: Path):
    marker = workdir / "still-broken"
    marker.write_text("remove me to let the trials succeed")
    extra = (f"    config.fail_at_iteration: {{grid: [null, 2]}}\n"
             f"config: {{fail_while_exists: {marker}}}\n")
    spec = write_toy(workdir, "flaky", iterations=3, samples=2, extra="")
    spec.write_text(spec.read_text().replace("config: {sleep_s: 0.0}",
                                             f"config: {{sleep_s: 0.0, fail_while_exists: {marker}}}")
                    + extra.splitlines()[0] + "\n")
    first = run_cli("run", str(spec), "--id", "flaky", cwd=workdir)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "rerun-failed flaky" in first.stdout

    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, "flaky")
    runs = {r.data.tags["runyard.trial_id"]: r for r in children_of(client, ledger.run_id)}
    failed = sorted(t for t, r in runs.items() if r.info.status == "FAILED")
    finished = sorted(t for t, r in runs.items() if r.info.status == "FINISHED")
    assert len(failed) == 2 and len(finished) == 2
    assert "planted failure" in runs[failed[0]].data.tags["runyard.error"]
    end_times = {t: runs[t].info.end_time for t in finished}

    marker.unlink()
    second = run_cli("rerun-failed", ledger.run_id, cwd=workdir)  # by MLflow run id
    assert second.returncode == 0, second.stdout + second.stderr

    rerun = {r.data.tags["runyard.trial_id"]: r for r in children_of(client, ledger.run_id)}
    assert sorted(rerun) == sorted(runs)  # no new runs
    assert all(r.info.status == "FINISHED" for r in rerun.values())
    for trial_id in finished:  # untouched
        assert rerun[trial_id].info.end_time == end_times[trial_id]
    for trial_id in failed:
        assert steps(client, rerun[trial_id].info.run_id)[-1] == 3


def test_extend_adds_trials_under_the_same_parent_and_promote_writes_the_best(workdir: Path):
    spec = write_toy(workdir, "grow", iterations=2, samples=2)
    assert run_cli("run", str(spec), "--id", "grow", cwd=workdir).returncode == 0
    result = run_cli("extend", "grow", "--samples", "3", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr

    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, "grow")
    children = children_of(client, ledger.run_id)
    assert sorted(r.data.tags["runyard.trial_id"] for r in children) == [
        "t0000", "t0001", "t0002", "t0003", "t0004"]
    assert all(r.info.status == "FINISHED" for r in children)

    best = run_cli("best", "grow", cwd=workdir)
    assert best.returncode == 0 and "which hyperparameters matter" in best.stdout
    scores = {r.data.tags["runyard.trial_id"]: r.data.metrics["score"] for r in children}
    winner = max(scores, key=scores.get)

    target = workdir / "jobs" / "grow_best.yaml"
    promoted = run_cli("promote", "grow", "--to", str(target), cwd=workdir)
    assert promoted.returncode == 0, promoted.stderr
    text = target.read_text()
    assert "grow" in text and f"trial {winner}" in text and "extends: ../grow.yaml" in text
    spec_back = load_spec(target)
    winner_run = next(r for r in children if r.data.tags["runyard.trial_id"] == winner)
    assert spec_back.sweep is None
    assert spec_back.config["x"] == pytest.approx(float(winner_run.data.params["config.x"]))
    assert run_cli("promote", "grow", "--to", str(target), cwd=workdir).returncode == 2


def test_asha_stops_poor_trials_early(workdir: Path):
    spec = write_toy(workdir, "asha", iterations=9, samples=9, concurrent=3,
                     extra="  scheduler: {asha: {grace: 1, max_t: 9, reduction_factor: 3}}\n")
    spec.write_text(spec.read_text().replace("{uniform: [0.0, 1.0]}", "{grid: [0.0, 0.05, 0.1, "
                                             "0.15, 0.2, 0.25, 0.3, 0.9, 1.0]}")
                    .replace("samples: 9", "samples: 1"))
    result = run_cli("run", str(spec), "--id", "asha", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, "asha")
    iterations = {float(r.data.params["config.x"]): int(r.data.metrics["training_iteration"])
                  for r in children_of(client, ledger.run_id)}
    assert iterations[0.3] == 9  # the best config is never stopped
    assert min(iterations[0.9], iterations[1.0]) < 9  # the worst are stopped early
    assert sum(iterations.values()) < 9 * 9


def test_the_median_rule_on_seed_means_stops_the_worst_configs(workdir: Path):
    """The median-stopping branch of the seed-mean scheduler, through Tune: five configs of
    two seeds, judged on their seed means against the configs that reported before them."""
    spec = write_toy(workdir, "median", sleep=0.2, iterations=8, samples=1, concurrent=2,
                     extra="  seeds: 2\n  scheduler: {median: {grace: 2}}\n")
    spec.write_text(spec.read_text().replace("{uniform: [0.0, 1.0]}",
                                             "{grid: [0.3, 0.35, 0.5, 0.8, 1.0]}"))
    result = run_cli("run", str(spec), "--id", "median", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri(workdir))
    iterations: dict[float, list[int]] = {}
    for run in children_of(client, ledger_of(workdir, "median").run_id):
        assert run.info.status == "FINISHED", run.info.run_name
        iterations.setdefault(float(run.data.params["config.x"]), []).append(
            int(run.data.metrics["training_iteration"]))
    assert sorted(iterations) == [0.3, 0.35, 0.5, 0.8, 1.0]
    assert iterations[0.3] == [8, 8], iterations  # the best config is never stopped
    # The worst is stopped once both its seeds reached an iteration past the grace period (a
    # seed whose sibling started late may have run to the end alone by then).
    assert min(iterations[1.0]) < 8, iterations
    assert sum(map(sum, iterations.values())) < 10 * 8


def test_queue_runs_by_priority_and_resumes_after_its_process_is_killed(workdir: Path):
    low = write_toy(workdir, "low", iterations=2, samples=1)
    high = write_toy(workdir, "high", sleep=0.5, iterations=12, every=2, samples=1)
    mid = write_toy(workdir, "mid", iterations=2, samples=1)
    for spec, priority in ((low, 0), (high, 10), (mid, 5)):
        assert run_cli("queue", "add", str(spec), "--priority", str(priority), cwd=workdir).returncode == 0

    runner = start_cli("queue", "run", cwd=workdir)
    sigkill_at_checkpoint(runner, workdir / ".runyard" / "ray_results", "high-*/t0000/checkpoint_000001")

    result = run_cli("queue", "run", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"resuming #2 high-", result.stdout)
    order = re.findall(r"(?:starting|resuming) #\d+ (\w+)-", result.stdout)
    assert order == ["high", "mid", "low"]

    listing = run_cli("queue", "ls", cwd=workdir).stdout
    assert listing.count("done") == 3
    client = MlflowClient(tracking_uri(workdir))
    ledger = ledgers(workdir, "high-")[0]
    (child,) = children_of(client, ledger.run_id)
    assert child.info.status == "FINISHED" and steps(client, child.info.run_id).count(1) == 1


def test_queue_starts_the_next_sweep_as_soon_as_the_cluster_has_room(workdir: Path):
    # On 2 CPUs: `long` holds one CPU for ~20 s, so `side` (one CPU) has room beside it and
    # starts while it runs; `wide` asks for both CPUs and waits until both have ended.
    long = write_toy(workdir, "long", sleep=0.5, iterations=40, samples=1)
    side = write_toy(workdir, "side", sleep=0.5, iterations=4, samples=1)
    wide = write_toy(workdir, "wide", iterations=2, samples=1,
                     extra="resources: {cpus_per_trial: 2}\n")
    for spec, priority in ((wide, 0), (long, 10), (side, 5)):
        assert run_cli("queue", "add", str(spec), "--priority", str(priority), cwd=workdir).returncode == 0

    result = run_cli("queue", "run", "--num-cpus", "2", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.findall(r"starting #\d+ (\w+)-", result.stdout) == ["long", "side", "wide"]
    for name in ("long", "side", "wide"):  # each sweep's own output, in its own log
        (log,) = (workdir / ".runyard" / "queue").glob(f"{name}-*.log")
        assert name in log.read_text()

    client = MlflowClient(tracking_uri(workdir))
    trial = {}
    for ledger in ledgers(workdir):
        (child,) = children_of(client, ledger.run_id)
        assert child.info.status == "FINISHED"
        trial[ledger.sweep_id.split("-")[0]] = child.info
    assert trial["side"].start_time < trial["long"].end_time  # side by side
    assert trial["wide"].start_time >= max(trial["long"].end_time, trial["side"].end_time)


def test_stopping_the_queue_runner_stops_its_sweeps_and_requeues_them(workdir: Path):
    spec = write_toy(workdir, "stopped", sleep=0.5, iterations=12, every=2, samples=1)
    assert run_cli("queue", "add", str(spec), cwd=workdir).returncode == 0
    runner = subprocess.Popen([str(RUNYARD), "queue", "run"], cwd=workdir, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    wait_for_checkpoint(runner, workdir / ".runyard" / "ray_results",
                        "stopped-*/t0000/checkpoint_000001")
    runner.send_signal(signal.SIGTERM)  # the runner alone, as a scheduler would stop it
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode != 0
    assert "stopped; `runyard queue run` resumes it" in output, output

    client = MlflowClient(tracking_uri(workdir))
    ledger = ledgers(workdir, "stopped-")[0]
    (child,) = children_of(client, ledger.run_id)
    assert child.info.status == "KILLED"
    assert client.get_run(ledger.run_id).info.status == "KILLED"
    assert "queued" in run_cli("queue", "ls", cwd=workdir).stdout

    result = run_cli("queue", "run", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"resuming #1 stopped-", result.stdout)
    (child,) = children_of(client, ledger.run_id)
    assert child.info.status == "FINISHED" and steps(client, child.info.run_id).count(1) == 1


def test_time_budget_ends_running_trials_where_they_are_and_starts_no_more(workdir: Path):
    # Three 30-s trials, one at a time, on a 15-s budget: the first is stopped mid-way.
    spec = write_toy(workdir, "budget", sleep=0.1, iterations=300, every=5, samples=3,
                     concurrent=1, extra="  time_budget_s: 15\n")
    result = run_cli("run", str(spec), "--id", "budget", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 trial(s) never started" in result.stdout

    client = MlflowClient(tracking_uri(workdir))
    parent = client.get_run(ledger_of(workdir, "budget").run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["runyard.not_started"] == "2"
    (child,) = children_of(client, parent.info.run_id)
    assert child.info.status == "FINISHED"
    assert child.data.tags["runyard.stopped_by"] == "time budget"
    assert 0 < max(steps(client, child.info.run_id)) < 300
    assert "checkpoint" in {a.path for a in client.list_artifacts(child.info.run_id)}
