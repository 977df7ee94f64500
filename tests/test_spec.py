"""Specs that are right: extends, --set, hashing, YAML number reading, trial expansion."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard_testing import JOBS
from runyard.plan import expand
from runyard.spec import SpecError, load_spec
from runyard.cli.main import main


def test_every_shipped_job_validates(capsys):
    specs = sorted(str(p) for p in JOBS.glob("*.yaml"))
    assert len(specs) >= 2
    assert main(["validate", *specs]) == 0, capsys.readouterr().err


def test_extends_merges_deeply_and_set_wins(tmp_path: Path):
    (tmp_path / "base.yaml").write_text(
        "name: base\nworkload: sl.linear\nconfig: {lr: 0.1, batch_size: 32}\nstop: {iterations: 3}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nconfig: {lr: 1e-3}\n")
    spec = load_spec(tmp_path / "child.yaml", ["config.batch_size=16", "config.optimizer=adam"])
    assert spec.name == "child"
    assert spec.config["lr"] == 0.001  # 1e-3 is a float, as in YAML 1.2
    assert spec.config["batch_size"] == 16 and spec.config["optimizer"] == "adam"
    assert spec.config["momentum"] == 0.9  # the workload's default, filled in
    assert spec.stop.iterations == 3


def test_spec_is_immutable():
    spec = load_spec(JOBS / "digits_linear.yaml")
    with pytest.raises(Exception):
        spec.seed = 3


def test_hash_identifies_the_resolved_spec(tmp_path: Path):
    a = load_spec(JOBS / "digits_linear.yaml")
    written_differently = (JOBS / "digits_linear.yaml").read_text().replace("lr: 0.05", "lr: 5.0e-2")
    (tmp_path / "same.yaml").write_text(written_differently)
    assert load_spec(tmp_path / "same.yaml").hash == a.hash
    assert load_spec(JOBS / "digits_linear.yaml", ["seed=1"]).hash != a.hash


def test_sweep_mode_defaults_to_the_metric_direction(tmp_path: Path):
    spec = load_spec(JOBS / "digits_linear_sweep.yaml", ["sweep.metric=val_loss", "sweep.mode=null"])
    assert spec.sweep.mode == "min"


def test_mode_against_the_metric_direction_is_an_error():
    with pytest.raises(SpecError, match="sweep.mode: max, but val_loss is better when lower"):
        load_spec(JOBS / "digits_linear_sweep.yaml", ["sweep.metric=val_loss"])


def test_random_trials_are_reproducible_and_in_bounds():
    spec = load_spec(JOBS / "digits_linear_sweep.yaml")
    trials = expand(spec)
    assert len(trials) == 16 and [t.trial_id for t in trials][:2] == ["t0000", "t0001"]
    assert [t.config for t in trials] == [t.config for t in expand(spec)]
    for trial in trials:
        assert 1e-4 <= trial.config["lr"] <= 1.0
        assert 1e-6 <= trial.config["weight_decay"] <= 1e-1
    # Drawing more samples later leaves the earlier ones unchanged (extendable sweeps).
    assert expand(spec, first_sample=3)[0].config == trials[3].config
    assert expand(spec, first_sample=3)[0].trial_id == "t0003"


def test_grid_and_seeds_expand_to_every_combination(tmp_path: Path):
    spec = load_spec(JOBS / "digits_linear_sweep.yaml", [
        "sweep.search=grid", "sweep.samples=1", "sweep.seeds=3",
        "sweep.space.config.lr.grid=[0.1, 0.01]",
        "sweep.space.config.weight_decay.choice=[0.0, 0.001]",
        "sweep.space.config.init_std.grid=[0.01]",
    ])
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 3
    assert {(t.config["lr"], t.config["weight_decay"]) for t in trials} == {
        (0.1, 0.0), (0.1, 0.001), (0.01, 0.0), (0.01, 0.001)}
    assert sorted({t.seed for t in trials}) == [0, 1, 2]
    assert trials[0].label == "lr=0.1,weight_decay=0,init_std=0.01,seed=0"


def test_no_two_samples_of_a_sweep_share_a_run_name():
    # 500 uniform draws on [0.001, 1): at 3 significant digits dozens of pairs would look alike.
    spec = load_spec(JOBS / "digits_linear_sweep.yaml", [
        "sweep.samples=500", "sweep.seeds=2", "sweep.space={config.lr: {uniform: [0.001, 1.0]}, "
        "config.weight_decay: {choice: [0.0, 0.001]}}"])
    trials = expand(spec)
    assert len({t.label for t in trials}) == 1000
    assert len({f"{t.config['lr']:.3g}" for t in trials}) < 500  # the collisions that were there
    longest = max(trials, key=lambda t: len(t.label)).label
    assert len(longest) <= len("lr=0.123456,weight_decay=0.001,seed=1"), longest
    # A value gets more digits only where a neighbour needs them; others stay at three.
    at_three = [t for t in trials if t.label.split(",")[0] == f"lr={t.config['lr']:.3g}"]
    assert len(at_three) > len(trials) / 2

    # Samples whose values are all equal (two draws of one choice) name their sample.
    twins = expand(load_spec(JOBS / "digits_linear_sweep.yaml", [
        "sweep.samples=3", "sweep.seeds=1", "sweep.space={config.lr: {choice: [0.1]}}"]))
    assert [t.label for t in twins] == ["lr=0.1,sample=0,seed=0", "lr=0.1,sample=1,seed=0",
                                       "lr=0.1,sample=2,seed=0"]
