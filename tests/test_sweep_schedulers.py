"""Seed-mean early stopping, decided on real Tune Trial objects fed toy.quadratic's own scores.

toy.quadratic with large noise (0.5 against a gap of 0.49 between the configs' limits) on
seeds 4, 5, 6: the bad config (x = 1.0) has a lucky seed that scores above one of the good
config's (x = 0.3) seeds. Tune's ASHA, judging trials one by one, cuts a seed of the good
config and lets the bad config's lucky seed run to the end; the seed-mean scheduler stops
the bad config (all its seeds) and never the good one.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from runyard.execute.payload import StopConditions, TrialPayload
from runyard.execute.schedulers import SeedMeanScheduler
from runyard.workloads.base import WorkloadContext
from runyard.workloads.toy import Quadratic

GOOD_X, BAD_X, NOISE, FIRST_SEED, SEEDS, ITERATIONS = 0.3, 1.0, 0.5, 4, 3, 4


def toy_scores(x: float, seed: int, tmp_path: Path) -> list[float]:
    workload = Quadratic()
    workload.setup(Quadratic.Config(x=x, noise=NOISE), WorkloadContext(seed=seed, workdir=tmp_path))
    return [workload.step()["score"] for _ in range(ITERATIONS)]


def sweep_trials(tmp_path: Path) -> tuple[list[Trial], dict[str, list[float]]]:
    """Trials of a 2-config x 3-seed sweep, in the sweep's order, with their score series."""
    trials, scores = [], {}
    for sample, x in enumerate((GOOD_X, BAD_X)):
        for offset in range(SEEDS):
            index = sample * SEEDS + offset
            payload = TrialPayload(
                trial_id=f"t{index:04d}", index=index, sample=sample, label=f"x={x}",
                seed=FIRST_SEED + offset, workload="toy.quadratic", config={"x": x}, env=None,
                data=None, rollout=None, resources={"cpus_per_trial": 1},
                stop=StopConditions(iterations=ITERATIONS), workdir=str(tmp_path),
                checkpoint_every=0, checkpoint_keep=1, storage=str(tmp_path))
            trial = Trial("WorkloadTrainable", trial_id=payload.trial_id, stub=True,
                          config=payload.as_config())
            trials.append(trial)
            scores[trial.trial_id] = toy_scores(x, FIRST_SEED + offset, tmp_path)
    return trials, scores


def feed(scheduler: TrialScheduler, trials: list[Trial], scores: dict[str, list[float]]
         ) -> dict[str, int]:
    """Every running trial reports iteration t in sweep order; returns the iteration at
    which each trial ended (stopped by the scheduler, or the last one)."""
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    ended: dict[str, int] = {}
    for iteration in range(1, ITERATIONS + 1):
        for trial in trials:
            if trial.trial_id in ended:
                continue
            result = {"training_iteration": iteration, "score": scores[trial.trial_id][iteration - 1]}
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                ended[trial.trial_id] = iteration
    return {t.trial_id: ended.get(t.trial_id, ITERATIONS) for t in trials}


def asha() -> ASHAScheduler:
    return ASHAScheduler(time_attr="training_iteration", metric="score", mode="max",
                         grace_period=1, max_t=ITERATIONS, reduction_factor=2)


GOOD, BAD = ("t0000", "t0001", "t0002"), ("t0003", "t0004", "t0005")


def test_the_bad_config_has_a_lucky_seed(tmp_path: Path):
    _, scores = sweep_trials(tmp_path)
    first = {trial_id: series[0] for trial_id, series in scores.items()}
    assert max(first[t] for t in BAD) > min(first[t] for t in GOOD)
    mean = lambda ids: sum(first[t] for t in ids) / len(ids)  # noqa: E731
    assert mean(GOOD) > mean(BAD)


def test_per_trial_asha_follows_the_lucky_seed(tmp_path: Path):
    """What goes wrong without seed means (the reason the scheduler exists)."""
    trials, scores = sweep_trials(tmp_path)
    ended = feed(asha(), trials, scores)
    assert min(ended[t] for t in GOOD) < ITERATIONS  # a seed of the good config is cut
    assert max(ended[t] for t in BAD) == ITERATIONS  # the bad one's lucky seed runs on


def test_seed_mean_asha_stops_the_bad_config_with_all_its_seeds(tmp_path: Path):
    trials, scores = sweep_trials(tmp_path)
    ended = feed(SeedMeanScheduler(asha(), SEEDS, "score", "max", max_t=ITERATIONS), trials, scores)
    assert all(ended[t] == ITERATIONS for t in GOOD), ended
    # Judged at the first rung once all three seeds reported; the seed that completed the
    # set stops there, the others at their next result.
    assert sorted(ended[t] for t in BAD) == [1, 2, 2], ended


def test_a_config_is_judged_only_when_every_live_seed_reached_the_iteration(tmp_path: Path):
    trials, scores = sweep_trials(tmp_path)
    scheduler = SeedMeanScheduler(asha(), SEEDS, "score", "max", max_t=ITERATIONS)
    for trial in trials[:SEEDS]:
        scheduler.on_trial_add(None, trial)
    first, second, third = trials[:SEEDS]
    for trial in (first, second):
        scheduler.on_trial_result(None, trial, {"training_iteration": 1,
                                                "score": scores[trial.trial_id][0]})
    assert scheduler.seed_mean(0, 1) is None and 0 not in scheduler.judged
    # The third seed fails before iteration 1: the other two are the config's mean.
    scheduler.on_trial_error(None, third)
    expected = (scores[first.trial_id][0] + scores[second.trial_id][0]) / 2
    assert scheduler.seed_mean(0, 1) == expected
    assert scheduler.judged[0] == 1


def test_after_a_resume_judging_goes_on_from_where_the_seeds_are(tmp_path: Path):
    """A resumed experiment brings a fresh scheduler: ended seeds are re-added as TERMINATED
    and running ones report from their checkpoints on (iteration 3 here)."""
    trials, scores = sweep_trials(tmp_path)
    scheduler = SeedMeanScheduler(asha(), SEEDS, "score", "max", max_t=ITERATIONS)
    first, second, third = trials[:SEEDS]
    first.set_status(Trial.TERMINATED)
    for trial in (first, second, third):
        scheduler.on_trial_add(None, trial)
    for trial in (second, third):
        scheduler.on_trial_result(None, trial, {"training_iteration": 3,
                                                "score": scores[trial.trial_id][2]})
    assert scheduler.judged[0] == 3
    assert scheduler.seed_mean(0, 3) == (scores[second.trial_id][2] + scores[third.trial_id][2]) / 2
