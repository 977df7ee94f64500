"""Malformed specs: each gives a message naming the file, line and field, exit code 2, and
starts nothing — no Ray, no MLflow store, no run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runyard_testing import embedded_ray_sessions
from runyard.cli.main import main

VALID = """\
name: digits
workload: sl.linear
data: {source: digits}
config:
  lr: 0.1
stop: {iterations: 2}
"""

SWEEP = VALID + """\
sweep:
  metric: val_top1
  samples: 2
  space:
    config.lr: {loguniform: [1.0e-3, 1.0]}
"""

# (id, files {name: text}, spec file, --set overrides, expected line, substrings of the message)
CASES = [
    ("bad-indent", {"s.yaml": VALID + "  lrr: 3\n"}, "s.yaml", [], 7, ["not valid YAML"]),
    ("bad-yaml", {"s.yaml": VALID + "config: {lr: [0.1\n"}, "s.yaml", [], 7, ["not valid YAML"]),
    ("unknown-workload", {"s.yaml": VALID.replace("sl.linear", "sl.linaer")}, "s.yaml", [], 2,
     ["workload:", "unknown workload 'sl.linaer'", "did you mean 'sl.linear'"]),
    ("unknown-top-key", {"s.yaml": VALID + "stpo: {time_s: 5}\n"}, "s.yaml", [], 7,
     ["stpo", "unknown key", "did you mean 'stop'"]),
    ("unknown-config-key", {"s.yaml": VALID.replace("lr: 0.1", "lr: 0.1\n  lrr: 3")}, "s.yaml", [], 6,
     ["config.lrr", "unknown key", "did you mean 'lr'"]),
    ("wrong-type", {"s.yaml": VALID.replace("lr: 0.1", "lr: fast")}, "s.yaml", [], 5,
     ["config.lr", "valid number", "found 'fast'"]),
    ("negative-resources", {"s.yaml": VALID + "resources: {cpus_per_trial: -1}\n"}, "s.yaml", [], 7,
     ["resources.cpus_per_trial", "greater than 0", "found -1"]),
    ("empty-space", {"s.yaml": VALID + "sweep: {metric: val_top1, space: {}}\n"}, "s.yaml", [], 7,
     ["sweep.space", "empty"]),
    ("loguniform-non-positive", {"s.yaml": SWEEP.replace("1.0e-3, 1.0", "0, 1.0")}, "s.yaml", [], 11,
     ["sweep.space.config.lr", "loguniform", "> 0"]),
    ("metric-not-reported", {"s.yaml": SWEEP.replace("metric: val_top1", "metric: val_acc")},
     "s.yaml", [], 8, ["sweep.metric", "does not report 'val_acc'", "val_top1"]),
    ("extends-cycle", {"a.yaml": "extends: b.yaml\n" + VALID, "b.yaml": "extends: a.yaml\n"},
     "a.yaml", [], None, ["extends", "cycle"]),
    ("missing-file", {}, "nowhere.yaml", [], None, ["file not found", "nowhere.yaml"]),
    ("missing-base", {"s.yaml": "extends: base.yaml\n" + VALID}, "s.yaml", [], None,
     ["extends", "file not found", "base.yaml"]),
    ("missing-stop", {"s.yaml": VALID.replace("stop: {iterations: 2}\n", "")}, "s.yaml", [], None,
     ["stop", "until a stop condition ends it", "iterations: 100"]),
    ("stop-never", {"s.yaml": VALID.replace("{iterations: 2}", "{}")}, "s.yaml", [], 6,
     ["stop", "until a stop condition ends it"]),
    ("duplicate-key", {"s.yaml": VALID + "seed: 1\nseed: 2\n"}, "s.yaml", [], 8,
     ["seed", "written twice"]),
    ("space-not-a-field", {"s.yaml": SWEEP.replace("config.lr:", "config.learning_rate:")},
     "s.yaml", [], 11, ["config.learning_rate", "no config field", "lr"]),
    ("empty-choice", {"s.yaml": SWEEP.replace("{loguniform: [1.0e-3, 1.0]}", "{choice: []}")},
     "s.yaml", [], 11, ["sweep.space.config.lr", "empty"]),
    ("uniform-reversed", {"s.yaml": SWEEP.replace("loguniform: [1.0e-3, 1.0]", "uniform: [1.0, 0.1]")},
     "s.yaml", [], 11, ["sweep.space.config.lr", "low must be below high"]),
    ("space-value-invalid", {"s.yaml": SWEEP.replace("loguniform: [1.0e-3, 1.0]", "uniform: [-1.0, 1.0]")},
     "s.yaml", [], 11, ["sweep.space.config.lr", "-1.0", "greater than 0"]),
    ("bad-name", {"s.yaml": VALID.replace("name: digits", "name: my digits run")}, "s.yaml", [], 1,
     ["name", "pattern"]),
    ("not-a-mapping", {"s.yaml": "- name: digits\n"}, "s.yaml", [], 1, ["mapping"]),
    ("bad-set", {"s.yaml": VALID}, "s.yaml", ["config.lr"], None, ["--set config.lr", "KEY=VALUE"]),
    ("set-wrong-type", {"s.yaml": VALID}, "s.yaml", ["resources.workers=two"], None,
     ["--set resources.workers=two", "resources.workers", "valid integer"]),
    ("unknown-data-source", {"s.yaml": VALID.replace("source: digits", "source: mnist")}, "s.yaml",
     [], 3, ["data.source", "mnist", "digits"]),
    ("two-schedulers", {"s.yaml": SWEEP + "  scheduler: {asha: {}, median: {}}\n"}, "s.yaml", [], 12,
     ["sweep.scheduler", "exactly one scheduler"]),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_spec_is_rejected_before_anything_starts(case, command, workdir: Path, capsys):
    _, files, spec_name, overrides, line, expected = case
    for name, text in files.items():
        (workdir / name).write_text(text)
    args = [command, spec_name] + [item for o in overrides for item in ("--set", o)]

    sessions = embedded_ray_sessions()
    code = main(args)

    err = capsys.readouterr().err
    assert code == 2, err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    if line is not None:
        assert re.search(rf"{re.escape(spec_name)}:{line}\b", err), f"line {line} not named:\n{err}"
    assert embedded_ray_sessions() == sessions, "Ray was started for an invalid spec"
    assert not (workdir / ".runyard").exists(), "an invalid spec created tracking state"


def test_several_problems_are_reported_at_once(workdir: Path, capsys):
    text = VALID.replace("lr: 0.1", "lr: -3\n  momentum: 2") + "resources: {cpus_per_trial: 0}\n"
    (workdir / "s.yaml").write_text(text)
    assert main(["validate", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    for field in ("config.lr", "config.momentum", "resources.cpus_per_trial"):
        assert field in err
