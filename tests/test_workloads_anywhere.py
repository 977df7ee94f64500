"""A researcher's own workload class, outside runyard's tree: named by import path (from the
project directory or PYTHONPATH) or by an entry point of an installed package, it is checked,
swept, resumed and tracked exactly like a built-in one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import children_of, ledger_of, run_cli, sigkill_at_checkpoint, start_cli, tracking_uri
from runyard.spec import SpecError, load_spec

HILL = '''\
"""A lab's own agent: climbs a hill whose top is at x = 0.5."""
import json
import time
from pathlib import Path

from pydantic import Field

from runyard.workloads import Workload, WorkloadConfig


class HillConfig(WorkloadConfig):
    x: float = Field(0.0, description="where on the hill the agent stands")
    sleep_s: float = Field(0.0, ge=0, description="seconds each step sleeps")


class Hill(Workload):
    Config = HillConfig
    metrics = {"height": "max", "steps": "max"}

    def setup(self, config, context):
        self.config, self.seed, self.t = config, context.seed, 0

    def step(self):
        time.sleep(self.config.sleep_s)
        self.t += 1
        return {"height": self.t * (1 - (self.config.x - 0.5) ** 2) + 1e-3 * self.seed,
                "steps": float(self.t)}

    def save(self, directory):
        (Path(directory) / "hill.json").write_text(json.dumps({"t": self.t}))

    def restore(self, directory):
        self.t = json.loads((Path(directory) / "hill.json").read_text())["t"]


class HalfDone(Workload):
    Config = HillConfig
    metrics = {"height": "max"}

    def setup(self, config, context):
        pass

    def step(self):
        return {}
'''

SPEC = """\
name: {name}
workload: {workload}
config: {{sleep_s: {sleep}}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: 2, keep: 2}}
tracking: {{experiment: lab}}
sweep:
  seeds: 2
  metric: height
  space:
    config.x: {{uniform: [0.0, 1.0]}}
"""


def write_package(root: Path, package: str) -> None:
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "agents.py").write_text(HILL)
    (root / package / "broken.py").write_text("import lab_dependency_not_installed\n")


def write_spec(directory: Path, workload: str, name: str = "lab", sleep: float = 0.0,
               iterations: int = 2, extra: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, workload=workload, sleep=sleep,
                                iterations=iterations) + extra)
    return path


@pytest.fixture
def project(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory with a package `lab_in_project` in it; the import state it
    leaves (sys.path, the imported modules) is undone afterwards."""
    write_package(workdir, "lab_in_project")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield workdir
    for name in [n for n in sys.modules if n.startswith("lab_in_project")]:
        del sys.modules[name]


def problems_of(spec: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(spec, overrides)
    return str(caught.value)


def test_an_import_path_in_the_project_is_checked_like_a_built_in(project: Path):
    spec = load_spec(write_spec(project, "lab_in_project.agents:Hill"))
    assert spec.sweep.mode == "max"  # read from the class's metrics
    assert spec.config == {"x": 0.0, "sleep_s": 0.0}

    assert "config.sleep: unknown key 'sleep' (did you mean 'sleep_s'?)" in problems_of(
        project / "lab.yaml", ["config.sleep=1"])
    found = problems_of(project / "lab.yaml", ["sweep.metric=heigt", "sweep.space.config.y.grid=[1]"])
    assert "sweep.metric: lab_in_project.agents:Hill does not report 'heigt' (did you mean 'height'?)" in found
    assert "has no config field 'y'" in found


@pytest.mark.parametrize("workload, cause", [
    ("lab_elsewhere.agents:Hill",
     "cannot import lab_elsewhere.agents: ModuleNotFoundError: no module named 'lab_elsewhere' "
     "(neither in the project directory nor in an installed package"),
    ("lab_in_project.agents:Hil",
     "module lab_in_project.agents has no attribute 'Hil'; its Workload classes: HalfDone, Hill"),
    ("lab_in_project.agents:HillConfig",
     "is class HillConfig, not a subclass of runyard.workloads.Workload"),
    ("lab_in_project.agents:HalfDone", "HalfDone does not implement restore, save"),
    ("lab_in_project.broken:Agent",
     "no module named 'lab_dependency_not_installed' (needed by lab_in_project.broken"),
    ("lab_in_project.agents", "unknown workload 'lab_in_project.agents'"),
])
def test_a_workload_that_does_not_load_says_what_and_why_at_its_line(project: Path, workload: str,
                                                                      cause: str):
    found = problems_of(write_spec(project, workload))
    assert "lab.yaml:2: workload: " in found
    assert cause in found, found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package `lab_installed` that registers Hill as `lab-hill` under the entry-point group
    runyard.workloads, pip-installed (no index, no dependencies) into a folder of its own that
    the tests put on PYTHONPATH, so nothing leaks into the environment."""
    source = tmp_path_factory.mktemp("lab-source")
    write_package(source, "lab_installed")
    (source / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=70.1"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "lab-installed"
        version = "0.1"

        [project.entry-points."runyard.workloads"]
        lab-hill = "lab_installed.agents:Hill"
        lab-broken = "lab_installed.agents:NoSuchClass"

        [tool.setuptools]
        packages = ["lab_installed"]
        """))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    return target


def on_path(target: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)}


def test_an_entry_point_of_an_installed_package_is_listed_and_checked(installed: Path, workdir: Path):
    env = on_path(installed)
    listing = run_cli("workloads", cwd=workdir, env=env)
    assert listing.returncode == 0, listing.stderr
    assert "lab-hill" in listing.stdout and "lab_installed.agents:Hill" in listing.stdout
    described = run_cli("workloads", "lab-hill", cwd=workdir, env=env)
    assert "where on the hill the agent stands" in described.stdout, described.stdout

    ok = run_cli("validate", str(write_spec(workdir, "lab-hill")), cwd=workdir, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "(lab-hill, 2 trials" in ok.stdout

    broken = run_cli("validate", str(write_spec(workdir, "lab-broken")), cwd=workdir, env=env)
    assert broken.returncode == 2
    assert ("workload: entry point 'lab-broken' (runyard.workloads = lab_installed.agents:NoSuchClass): "
            "module lab_installed.agents has no attribute 'NoSuchClass'") in broken.stderr
    typo = run_cli("validate", str(write_spec(workdir, "lab-hil")), cwd=workdir, env=env)
    assert "unknown workload 'lab-hil' (did you mean 'lab-hill'?)" in typo.stderr


def assert_tracked_like_a_built_in(workdir: Path, job_id: str, workload: str, iterations: int) -> None:
    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, job_id)
    parent = client.get_run(ledger.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["runyard.workload"] == workload
    children = children_of(client, ledger.run_id)
    assert sorted(r.data.tags["runyard.seed"] for r in children) == ["0", "1"]
    for run in children:
        assert run.info.status == "FINISHED"
        history = sorted(m.step for m in client.get_metric_history(run.info.run_id, "height"))
        assert history[-1] == iterations
        assert history.count(1) == 1, history  # a resumed trial continued, never restarted


@pytest.mark.slow
def test_an_entry_point_workload_is_swept_with_two_seeds_and_tracked(installed: Path, workdir: Path):
    spec = write_spec(workdir, "lab-hill", name="installed")
    result = run_cli("run", str(spec), "--id", "installed", cwd=workdir, env=on_path(installed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert_tracked_like_a_built_in(workdir, "installed", "lab-hill", iterations=2)


@pytest.mark.slow
def test_a_project_workload_sweep_resumes_after_sigkill(project: Path):
    spec = write_spec(project, "lab_in_project.agents:Hill", name="killed", sleep=0.5, iterations=6)
    driver = start_cli("run", str(spec), "--id", "killed", cwd=project)
    sigkill_at_checkpoint(driver, project / ".runyard" / "ray_results", "killed/t*/checkpoint_000001")

    result = run_cli("resume", "killed", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_tracked_like_a_built_in(project, "killed", "lab_in_project.agents:Hill", iterations=6)
