"""Adaptive search (`sweep.search: tpe`): the spec's rules, TPE against random search on the
toy bowl (the searcher driven exactly as Tune drives it, without Tune's trial runtime), and a
TPE sweep through `runyard run` that is SIGKILLed, resumed and extended on a real embedded
Ray and MLflow store, its searcher told one seed mean per config."""

from __future__ import annotations

import functools
import glob
import os
import pickle
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import children_of, ledger_of, run_cli, sigkill_at_checkpoint, start_cli, tracking_uri
from runyard.execute.adaptive import ProposedTrials
from runyard.execute.payload import TrialPayload
from runyard.execute.tune_runner import trial_payload
from runyard.plan import expand
from runyard.spec import SpecError, load_spec
from runyard.workloads.toy import bowl_score

BOWL_SWEEP = """\
name: {name}
workload: toy.bowl
config: {{noise: 0.02, sleep_s: {sleep}}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: 1}}
tracking: {{experiment: bowl}}
seed: {seed}
sweep:
  search: {search}
  samples: {samples}
  seeds: {seeds}
  metric: score
  max_concurrent: 2
  space:
    config.lr: {{loguniform: [1.0e-5, 1.0e-1]}}
    config.momentum: {{uniform: [0.0, 1.0]}}
    config.width: {{choice: [16, 32, 64, 128, 256, 512, 1024]}}
    config.dropout: {{uniform: [0.0, 0.5]}}
"""


def write_bowl(directory: Path, name: str = "bowl", search: str = "tpe", samples: int = 4,
               seeds: int = 2, iterations: int = 3, sleep: float = 0.0, seed: int = 0,
               extra: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(BOWL_SWEEP.format(name=name, search=search, samples=samples, seeds=seeds,
                                      iterations=iterations, sleep=sleep, seed=seed) + extra)
    return path


# ------------------------------------------------------------------------------ the spec


@pytest.mark.parametrize("change, message", [
    (("    config.dropout: {uniform: [0.0, 0.5]}\n",
      "    config.dropout: {uniform: [0.0, 0.5]}\n    config.decay: {grid: [0.3, 0.6]}\n"),
     "give them as choice"),
    (("  max_concurrent: 2\n", "  max_concurrent: 2\n  scheduler: {asha: {max_t: 3}}\n"),
     "early-stopped values"),
])
def test_tpe_refuses_what_it_cannot_learn_from(tmp_path: Path, change: tuple[str, str], message: str):
    spec = write_bowl(tmp_path)
    spec.write_text(spec.read_text().replace(*change))
    with pytest.raises(SpecError, match=message):
        load_spec(spec)


def test_startup_is_refused_for_a_sweep_that_draws_its_configs(tmp_path: Path):
    with pytest.raises(SpecError, match="startup applies to search: tpe only"):
        load_spec(write_bowl(tmp_path, search="random"), ["sweep.startup=3"])


def test_a_tpe_plan_has_one_slot_per_config_and_seed(tmp_path: Path):
    trials = expand(load_spec(write_bowl(tmp_path, samples=3, seeds=2)))
    assert [(t.trial_id, t.sample, t.seed) for t in trials] == [
        ("t0000", 0, 0), ("t0001", 0, 1), ("t0002", 1, 0), ("t0003", 1, 1), ("t0004", 2, 0),
        ("t0005", 2, 1)]


# --------------------------------------------------------------- TPE against random search


def noisy_score(payload: TrialPayload) -> float:
    """What toy.bowl reports after 3 iterations, its noise drawn from the trial's seed."""
    import numpy as np

    noise = 0.02 * np.random.default_rng([payload.seed, payload.sample]).standard_normal()
    return (1 - 0.5**3) * bowl_score(payload.config) + float(noise)


def drive(searcher: ProposedTrials, trials: int) -> list[TrialPayload]:
    """Ask and tell as Tune does with one pending trial at a time: suggest, run, complete."""
    ran = []
    for number in range(trials):
        payload = TrialPayload.of(searcher.suggest(f"tune-{number}"))
        searcher.on_trial_complete(f"tune-{number}", {"score": noisy_score(payload)})
        ran.append(payload)
    return ran


def optuna_told(searcher: ProposedTrials) -> list[float]:
    """The values Optuna's study holds: ProposedTrials -> Repeater -> OptunaSearch, whose
    study is its `_ot_study` (Ray's attribute; read here only, to see what TPE was told)."""
    return [t.value for t in searcher.searcher.searcher._ot_study.trials if t.value is not None]


def test_tpe_ends_closer_to_the_optimum_than_random_search_and_learns_from_seed_means(tmp_path: Path):
    configs, seeds = 24, 2
    tpe_best, random_best = [], []
    for repeat in range(5):
        spec = load_spec(write_bowl(tmp_path, samples=configs, seeds=seeds, seed=repeat),
                         ["sweep.startup=6"])
        searcher = ProposedTrials(spec, 0, functools.partial(
            trial_payload, spec, workdir=tmp_path, storage=tmp_path / "tune"))
        ran = drive(searcher, configs * seeds)
        # Trial ids in order; each config on its seeds, one after the other.
        assert [p.trial_id for p in ran] == [f"t{i:04d}" for i in range(configs * seeds)]
        assert [(p.sample, p.seed) for p in ran[:4]] == [(0, repeat), (0, repeat + 1), (1, repeat), (1, repeat + 1)]
        assert all(ran[2 * i].config == ran[2 * i + 1].config for i in range(configs))
        # One observation per config, equal to the mean of its seeds' values.
        means = [statistics.fmean(noisy_score(p) for p in ran[2 * i:2 * i + 2]) for i in range(configs)]
        assert optuna_told(searcher) == pytest.approx(means)
        tpe_best.append(max(bowl_score(p.config) for p in ran))

        drawn = load_spec(write_bowl(tmp_path, search="random", samples=configs, seeds=seeds, seed=repeat))
        random_best.append(max(bowl_score(t.config) for t in expand(drawn)))
    assert statistics.median(tpe_best) > statistics.median(random_best), (tpe_best, random_best)


def test_an_extension_starts_its_study_from_the_configs_judged_so_far(tmp_path: Path):
    from runyard.execute.adaptive import JudgedConfig

    spec = load_spec(write_bowl(tmp_path, samples=3, seeds=1), ["sweep.startup=2"])
    judged = [JudgedConfig({"config.lr": 3e-3, "config.momentum": 0.9, "config.width": 128,
                            "config.dropout": 0.1}, 0.87),
              JudgedConfig({"config.lr": 1e-5, "config.momentum": 0.0, "config.width": 16,
                            "config.dropout": 0.5}, 0.2)]
    searcher = ProposedTrials(spec, 5, functools.partial(
        trial_payload, spec, workdir=tmp_path, storage=tmp_path / "tune"), judged)
    ran = drive(searcher, 3)
    assert [(p.trial_id, p.sample) for p in ran] == [("t0005", 5), ("t0006", 6), ("t0007", 7)]
    assert optuna_told(searcher)[:2] == [0.87, 0.2]


# ------------------------------------------------------------- through `runyard run`


@pytest.mark.slow
def test_a_tpe_sweep_killed_with_sigkill_resumes_and_finishes_with_one_run_per_trial(tmp_path: Path):
    spec = write_bowl(tmp_path, name="tpe-kill", samples=3, seeds=3, iterations=6, sleep=0.25)
    driver = start_cli("run", str(spec), "--id", "tpe-kill", cwd=tmp_path)
    # Kill the driver and its Ray once the fourth trial (the second config's first seed) has
    # a checkpoint: the searcher has been told one config's mean and has proposed another.
    sigkill_at_checkpoint(driver, tmp_path / ".runyard" / "ray_results", "tpe-kill/t0003/checkpoint_000000")

    resumed = run_cli("resume", "tpe-kill", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    client = MlflowClient(tracking_uri(tmp_path))
    ledger = ledger_of(tmp_path, "tpe-kill")
    parent = client.get_run(ledger.run_id)
    children = children_of(client, ledger.run_id)
    assert sorted(r.data.tags["runyard.trial_id"] for r in children) == [f"t{i:04d}" for i in range(9)]
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["runyard.search"] for r in children} == {"tpe"}
    assert parent.info.status == "FINISHED" and "TPE search" in parent.data.tags["mlflow.note.content"]
    for run in children:
        history = client.get_metric_history(run.info.run_id, "score")
        assert sorted(m.step for m in history) == list(range(1, 7)), run.info.run_name

    # What the searcher was told, as Tune saved it: one value per config, its seeds' mean.
    by_sample: dict[int, list[float]] = {}
    for run in children:
        by_sample.setdefault(int(run.data.tags["runyard.sample"]), []).append(run.data.metrics["score"])
    newest = sorted(glob.glob(str(tmp_path / ".runyard/ray_results/tpe-kill/searcher-state-*.pkl")))[-1]
    with open(newest, "rb") as state:  # OptunaSearch.save pickles its fields, the study among them
        study = pickle.load(state)["_ot_study"]
    told = sorted(t.value for t in study.trials if t.value is not None)
    assert told == pytest.approx(sorted(statistics.fmean(v) for v in by_sample.values()))

    ranked = run_cli("best", "tpe-kill", cwd=tmp_path)
    assert ranked.returncode == 0, ranked.stderr
    assert client.get_run(ledger.run_id).data.tags["runyard.best_trial_id"] in ranked.stdout

    # A study whose saved searcher is gone cannot go on where it was: refused, clearly, and
    # before any run is touched.
    for path in glob.glob(str(tmp_path / ".runyard/ray_results/tpe-kill/searcher-state-*.pkl")):
        os.remove(path)
    refused = run_cli("resume", "tpe-kill", cwd=tmp_path)
    assert refused.returncode != 0
    assert "searcher's saved state is missing" in refused.stderr
    assert client.get_run(ledger.run_id).info.status == "FINISHED"
