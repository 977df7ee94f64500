"""The architecture, enforced: each layer imports only what is below it, workloads never
import Ray Tune, Ray Train or MLflow (so each one runs on its own), and runyard.data imports
neither Ray nor MLflow. The one place these rules are checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "runyard"

# layer -> runyard layers it must not import. The order, bottom up: workloads and data (the
# algorithms), tracking, spec and plan (which read the workloads' schemas), launch, execute,
# api (the one place that sequences a job), cli (parse, call the api, render).
FORBIDDEN = {
    "workloads": {"spec", "plan", "launch", "execute", "tracking", "api", "cli"},
    "data": {"spec", "plan", "launch", "execute", "tracking", "api", "cli", "workloads"},
    "tracking": {"spec", "plan", "launch", "execute", "api", "cli", "workloads"},
    "spec": {"plan", "launch", "execute", "tracking", "api", "cli"},
    "plan": {"launch", "execute", "tracking", "api", "cli"},
    # launch may start a tracking server (tracking is a leaf both sides use)
    "launch": {"execute", "api", "cli", "plan", "spec"},
    "execute": {"api", "cli"},
    "api": {"cli"},
    # jobs are started, continued and read back through the api, never the executor directly
    "cli": {"execute"},
}
THIRD_PARTY_FORBIDDEN = {"workloads": ("ray.tune", "ray.train", "mlflow"),
                         "data": ("ray", "mlflow")}
# Modules with a rule of their own: the rollout actors load theirs in every actor process,
# which should not pay for Tune's or MLflow's imports.
MODULE_THIRD_PARTY_FORBIDDEN = {"execute/rollout_pool.py": ("ray.tune", "ray.train", "mlflow")}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def files_of(layer: str) -> list[Path]:
    folder = PACKAGE / layer
    return sorted(folder.rglob("*.py")) if folder.is_dir() else []


def banned_imports(path: Path, banned: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imports_of(path)
                  if any(name == b or name.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_is_below_it(layer: str):
    for path in files_of(layer):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "runyard" and len(parts) > 1:
                assert parts[1] not in FORBIDDEN[layer], f"{path.relative_to(PACKAGE)} imports {name}"
        assert banned_imports(path, THIRD_PARTY_FORBIDDEN.get(layer, ())) == [], path.relative_to(PACKAGE)


@pytest.mark.parametrize("module", sorted(MODULE_THIRD_PARTY_FORBIDDEN))
def test_the_rollout_actors_module_imports_no_tune_or_mlflow(module: str):
    assert banned_imports(PACKAGE / module, MODULE_THIRD_PARTY_FORBIDDEN[module]) == []


def test_every_layer_has_code():
    for layer in ("spec", "plan", "launch", "execute", "workloads", "tracking", "api", "cli"):
        assert files_of(layer), layer


@pytest.mark.parametrize("leaf", ["errors.py", "fsio.py", "paths.py", "processes.py",
                                  "ray_compat.py", "scope.py"])
def test_the_leaf_modules_below_every_layer_import_none(leaf: str):
    assert [name for name in imports_of(PACKAGE / leaf) if name.startswith("runyard")] == []
