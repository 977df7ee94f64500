"""The front door: `runyard validate` answers at once and imports only what the spec's checks
need, refuses a spec over the input limits quickly with exit 2 and the limit's name, and keeps
library banners off the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runyard_testing import JOBS, run_cli

HEAVY = ("torch", "ray", "mlflow", "gymnasium", "sklearn", "pyarrow", "matplotlib")


def heavy_imports(*argv: str) -> list[str]:
    """The heavy packages a `runyard ARGV` run imports, from a fresh interpreter."""
    code = ("import json, sys\n"
            "from runyard.cli.main import main\n"
            "try:\n"
            f"    main({list(argv)!r})\n"
            "except SystemExit:\n"  # --help and --version end with it
            "    pass\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return json.loads(result.stdout.splitlines()[-1])


def test_validating_supervised_and_toy_specs_imports_no_torch_or_ray(tmp_path: Path):
    toy = tmp_path / "toy.yaml"
    toy.write_text("name: toy\nworkload: toy.quadratic\nstop: {iterations: 2}\n"
                   "sweep: {metric: score, samples: 4, space: {config.x: {uniform: [0, 1]}}}\n")
    specs = [str(JOBS / name) for name in ("digits_linear.yaml", "digits_linear_sweep.yaml",
                                           "imagenet64_linear.yaml", "synth_convnet.yaml")]
    assert heavy_imports("validate", *specs, str(toy)) == []
    assert heavy_imports("--help") == []


def test_validating_rl_specs_pays_for_gymnasium_alone():
    """An RL spec's env id is checked against gymnasium's registry; its policy schema and
    algorithm need no torch (the networks load when a trial sets up)."""
    specs = [str(JOBS / name) for name in ("cartpole_pg.yaml", "cartpole_trpo.yaml",
                                           "cartpole_cem.yaml", "pong_pg.yaml")]
    assert heavy_imports("validate", *specs) == ["gymnasium"]


def write_alias_bomb(path: Path) -> None:
    # Nine levels of nine aliases each: 9^9 (387 million) values once written out.
    lines = ["name: bomb", "workload: toy.quadratic", "stop: {iterations: 1}",
             "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path.write_text("\n".join(lines) + "\n")


def write_huge(path: Path) -> None:
    with path.open("w") as out:
        out.write("name: huge\nworkload: toy.quadratic\nstop: {iterations: 1}\ndescription: |\n")
        out.write(("  " + "y" * 98 + "\n") * (50 * 1024 * 1024 // 100))  # 50 MB


def write_deep(path: Path) -> None:
    path.write_text("name: deep\nworkload: toy.quadratic\nstop: {iterations: 1}\n"
                    "config: " + "[" * 10_000 + "]" * 10_000 + "\n")


@pytest.mark.parametrize("write, limit", [
    (write_alias_bomb, "expands to more than 100,000 values once its aliases (*name) are written out (MAX_VALUES)"),
    (write_huge, "over the limit of 1,048,576 bytes for a job spec (MAX_SPEC_BYTES)"),
    (write_deep, "nested more than 64 mappings/lists deep (MAX_DEPTH)"),
])
def test_a_spec_over_an_input_limit_is_refused_at_once(tmp_path: Path, write, limit: str):
    spec = tmp_path / "spec.yaml"
    write(spec)
    started = time.monotonic()
    result = run_cli("validate", str(spec), cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert limit in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"  # loose: well under a second when idle


def test_an_alias_used_inside_itself_is_refused(tmp_path: Path):
    spec = tmp_path / "cycle.yaml"
    spec.write_text("name: c\nworkload: toy.quadratic\nstop: {iterations: 1}\nconfig: &c\n  x: *c\n")
    result = run_cli("validate", str(spec), cwd=tmp_path)
    assert result.returncode == 2
    assert "cycle.yaml:4: an alias (*name) is used inside the value it names" in result.stderr


def test_workloads_prints_a_config_reference_from_the_field_descriptions(tmp_path: Path):
    result = run_cli("workloads", "sl.linear", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:4] == ["lr", "float,", ">", "0"] and line.endswith("learning rate")
               for line in lines), result.stdout
    assert any(line.split()[:2] == ["val_fraction", "float,"] for line in lines)
    assert "metrics (the better direction): train_loss (min)" in result.stdout
    assert "rollout:" not in result.stdout  # a block sl.linear does not read

    listing = run_cli("workloads", cwd=tmp_path)
    for name in ("sl.linear", "sl.convnet", "rl.pg", "rl.trpo", "rl.cem", "toy.quadratic", "rllib.<ALGO>"):
        assert name in listing.stdout
    unknown = run_cli("workloads", "sl.linaer", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown workload 'sl.linaer'" in unknown.stderr


def test_validating_an_atari_spec_prints_no_emulator_banner(tmp_path: Path):
    result = run_cli("validate", str(JOBS / "pong_pg.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "A.L.E" not in result.stderr + result.stdout and "Stella" not in result.stderr
