"""Workload registry: what a spec's `workload:` key may name.

- a built-in name (`sl.linear`, `rl.pg`, ...; REGISTRY below) or `rllib.<ALGO>`;
- an import path `package.module:Class`, importable from the project directory (the
  directory the job is run from, put on sys.path for the import) or from an installed
  package;
- a name an installed package registers under the entry-point group `runyard.workloads`
  (in its pyproject.toml: `[project.entry-points."runyard.workloads"] my-agent =
  "my_lab.agents:MyAgent"`).

Entries are import paths, so looking up one workload never imports the others (torch for
the supervised ones, gymnasium and ALE for the RL ones). Whatever the source, the class must
be a concrete Workload subclass with a WorkloadConfig schema and a metrics table, so the
same spec checks apply to it as to the built-in ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from runyard.workloads.base import Workload, WorkloadConfig, WorkloadContext

REGISTRY: dict[str, str] = {
    "sl.linear": "runyard.workloads.sl.linear:LinearClassifier",
    "sl.convnet": "runyard.workloads.sl.convnet:ConvNetClassifier",
    "toy.quadratic": "runyard.workloads.toy:Quadratic",
    "toy.bowl": "runyard.workloads.toy:Bowl",
    "rl.pg": "runyard.workloads.rl.pg:PolicyGradient",
    "rl.trpo": "runyard.workloads.rl.trpo:TRPO",
    "rl.cem": "runyard.workloads.rl.cem:CrossEntropyMethod",
    "command": "runyard.workloads.command:Command",
}

ENTRY_POINT_GROUP = "runyard.workloads"


class WorkloadNotLoadable(Exception):
    """A workload that is named but cannot be used; the message says what failed and why."""


def available() -> list[str]:
    """Registered workload names whose module is importable, sorted."""
    names = []
    for name, target in REGISTRY.items():
        module_name = target.split(":")[0]
        if importlib.util.find_spec(module_name) is not None:
            names.append(name)
    return sorted(names)


def entry_point_names() -> dict[str, str]:
    """Workloads registered by installed packages: name -> `module:Class`."""
    from importlib import metadata  # scanning installed packages: only when a name needs it

    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def get(name: str, project_dir: str | Path | None = None) -> type[Workload]:
    """The workload class `name` refers to.

    KeyError when `name` is neither built in, nor an import path, nor a registered entry
    point; WorkloadNotLoadable when it is one of those but does not load (its module is
    missing or raises, the attribute is missing, it is not a concrete Workload subclass).
    `project_dir` (default: the current directory) is where import paths are looked up
    first.

    `rllib.<ALGO>` (rllib.PPO, rllib.IMPALA, rllib.DQN ...) is RLlib's algorithm ALGO, run as a
    baseline workload (runyard.workloads.rl.rllib_baseline)."""
    if name.startswith("rllib."):
        from runyard.workloads.rl.rllib_baseline import workload_for

        return workload_for(name.removeprefix("rllib."))
    if name in REGISTRY:
        module_name, class_name = REGISTRY[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    if ":" in name:
        # On another node of a cluster the driver's project directory may not exist; there
        # the trial runs in the submitted copy of it, its working directory.
        found = Path(project_dir) if project_dir and Path(project_dir).is_dir() else Path.cwd()
        _put_on_path(found)
        return load_target(name, what=f"import path {name!r}")
    registered = entry_point_names()
    if name in registered:
        return load_target(registered[name],
                           what=f"entry point {name!r} ({ENTRY_POINT_GROUP} = {registered[name]})")
    raise KeyError(name)


def load_target(target: str, what: str) -> type[Workload]:
    """Import `module:Class` and check that it is a usable workload class."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise WorkloadNotLoadable(f"{what}: expected package.module:Class, e.g. my_lab.agents:MyAgent")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        itself = error.name is not None and (module_name + ".").startswith(error.name + ".")
        place = ("neither in the project directory nor in an installed package" if itself
                 else f"needed by {module_name}")
        raise WorkloadNotLoadable(
            f"{what}: cannot import {module_name}: ModuleNotFoundError: no module named "
            f"{error.name!r} ({place}; run from the project directory or pip install the "
            "package)") from None
    except Exception as error:  # the user's module itself failed while importing
        raise WorkloadNotLoadable(
            f"{what}: importing {module_name} failed: {type(error).__name__}: {error}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = sorted(n for n, v in vars(module).items()
                            if inspect.isclass(v) and issubclass(v, Workload) and v is not Workload)
            hint = f"; its Workload classes: {', '.join(public)}" if public else ""
            raise WorkloadNotLoadable(f"{what}: module {module_name} has no attribute {part!r}{hint}")
        found = getattr(found, part)
    return check_workload_class(found, what)


def check_workload_class(found: object, what: str) -> type[Workload]:
    """`found` if it is a concrete Workload subclass with a config schema and metrics."""
    if not (inspect.isclass(found) and issubclass(found, Workload)):
        kind = f"class {found.__name__}" if inspect.isclass(found) else f"a {type(found).__name__}"
        raise WorkloadNotLoadable(
            f"{what}: is {kind}, not a subclass of runyard.workloads.Workload "
            "(class MyAgent(Workload) with Config, metrics, setup, step, save, restore)")
    if inspect.isabstract(found):
        missing = ", ".join(sorted(found.__abstractmethods__))
        raise WorkloadNotLoadable(f"{what}: {found.__name__} does not implement {missing}")
    if not (inspect.isclass(found.Config) and issubclass(found.Config, WorkloadConfig)):
        raise WorkloadNotLoadable(f"{what}: {found.__name__}.Config must be a WorkloadConfig subclass")
    bad = {k: v for k, v in found.metrics.items() if v not in ("max", "min")}
    if not found.metrics or bad:
        raise WorkloadNotLoadable(
            f"{what}: {found.__name__}.metrics must map each metric it reports to 'max' or "
            f"'min'; found {bad or 'none'}")
    return found


def _put_on_path(project_dir: Path) -> None:
    # The project's own packages shadow installed ones of the same name, as they do for
    # `python train.py` run from the project directory.
    entry = str(project_dir.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "Workload", "WorkloadConfig", "WorkloadContext",
           "WorkloadNotLoadable", "available", "entry_point_names", "get"]
