"""YAML file (+ `extends:` bases + `--set` overrides) → a validated, immutable JobSpec.

Validation is all-or-nothing and reports every problem at once, each as
`file:line: field: what was found, what was expected`. Nothing starts before the whole spec
is valid, so this layer touches no Ray and no MLflow.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runyard import workloads
from runyard.errors import UserError
from runyard.spec.schema import JobSpec
from runyard.spec.yamlpos import MAX_SPEC_BYTES, Origin, YamlProblem, parse_value, parse_yaml, too_long
from runyard.workloads.base import Workload, WorkloadContext
from runyard.workloads.blocks import DATA_FORMS

Origins = dict[tuple[str, ...], Origin]
DATA_FORM_NAMES = {DATA_FORMS["digits"]: "the digits dataset (data: {source: digits})",
                   DATA_FORMS["shards"]: "a prepared dataset (data: {path: DIR})"}


@dataclass(frozen=True)
class Problem:
    origin: Origin
    field: str
    message: str

    def __str__(self) -> str:
        field = f"{self.field}: " if self.field else ""
        return f"{self.origin}: {field}{self.message}"


class SpecError(UserError):
    """One or more problems with a spec; str() lists them all, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"invalid job spec ({len(problems)} {noun}):"] + [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, merge and validate a spec; raise SpecError listing every problem."""
    data, origins = _read_with_bases(Path(path), chain=())
    origins = dict(origins)
    problems: list[Problem] = []
    for text in overrides or []:
        problem = _apply_override(data, origins, text)
        if problem:
            problems.append(problem)
    problems += _read_requirements(data, origins, Path(path))
    if problems:
        raise SpecError(problems)
    return validate_data(data, origins, default_origin=Origin(str(path)))


def _read_requirements(data: dict[str, Any], origins: Origins, path: Path) -> list[Problem]:
    """`environment.requirements` names a file relative to the spec that wrote it: its lines
    become the first of `environment.pip`, so the resolved spec (what a trial receives, on
    any node, and what the spec's hash covers) holds the requirements themselves."""
    environment = data.get("environment")
    if not isinstance(environment, dict) or not isinstance(environment.get("requirements"), str):
        return []
    key = ("environment", "requirements")
    origin = origins.get(key, Origin(str(path)))
    written_in = Path(origin.source) if origin.line else path
    file = written_in.parent / environment["requirements"]
    try:
        text = file.read_text()
    except OSError as error:
        return [Problem(origin, "environment.requirements",
                        f"cannot read {file}: {error.strerror or error}; give a pip "
                        "requirements file relative to the spec file")]
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    pip = environment.get("pip") if isinstance(environment.get("pip"), list) else []
    data["environment"] = {**environment, "pip": [*lines, *pip]}
    return []


def validate_data(data: dict[str, Any], origins: Origins, default_origin: Origin) -> JobSpec:
    """Validate already-merged spec data (also used for specs built in code)."""
    where = _Locator(origins, default_origin)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as error:
        problems = [_problem_from_pydantic(item, where, JobSpec) for item in error.errors()]
        # The workload and its config are still worth checking, so that one run of
        # `runyard validate` shows everything.
        problems += _check_workload_config(data, where)[1]
        raise SpecError(problems) from None

    workload_cls, problems = _check_workload_config(data, where)
    if problems:
        raise SpecError(problems)
    config = workload_cls.Config.model_validate(spec.config)
    spec = spec.model_copy(update={"config": config.model_dump(mode="json")})

    problems = _check_against_workload(spec, workload_cls, config, where)
    if problems:
        raise SpecError(problems)
    if spec.sweep is not None and spec.sweep.mode is None:
        mode = workload_cls.declared_metrics(config)[spec.sweep.metric]
        spec = spec.model_copy(update={"sweep": spec.sweep.model_copy(update={"mode": mode})})
    return spec


def workload_context(spec: JobSpec, seed: int | None = None, **extra: Any) -> WorkloadContext:
    """The context a workload of this spec is set up with."""
    return WorkloadContext(
        seed=spec.seed if seed is None else seed,
        env=spec.env, data=spec.data, rollout=spec.rollout, resources=spec.resources,
        environment=spec.environment, **extra,
    )


# ---------------------------------------------------------------------------- reading files


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], Origins]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in chain + (resolved,))
        raise SpecError([Problem(Origin(str(path)), "extends", f"cycle: {cycle}; remove one link")])
    if not path.is_file():
        hint = "check the path" if chain == () else "paths in extends are relative to the spec"
        source = str(chain[-1]) if chain else str(path)
        raise SpecError([Problem(Origin(source), "extends" if chain else "",
                                 f"file not found: {path} ({hint})")])
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:  # refused before it is read into memory
        raise SpecError([Problem(Origin(str(path)), "", too_long(size))])
    try:
        data, origins, dup_problems = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except YamlProblem as problem:
        raise SpecError([Problem(problem.origin, "", problem.message)]) from None
    except UnicodeDecodeError:
        raise SpecError([Problem(Origin(str(path)), "", "not a text file (expected YAML)")])
    if dup_problems:
        raise SpecError([Problem(p.origin, "", p.message) for p in dup_problems])
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SpecError([Problem(Origin(str(path), 1), "",
                                 f"a job spec is a mapping of keys (name:, workload:, ...); found {found}")])
    base_name = data.pop("extends", None)
    if base_name is None:
        return data, origins
    if not isinstance(base_name, str):
        raise SpecError([Problem(origins.get(("extends",), Origin(str(path))), "extends",
                                 f"expected a file path, found {base_name!r}")])
    base, base_origins = _read_with_bases(path.parent / base_name, chain + (resolved,))
    merged_origins = {**base_origins, **{k: v for k, v in origins.items() if k != ("extends",)}}
    return _deep_merge(base, data), merged_origins


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(data: dict[str, Any], origins: Origins, text: str) -> Problem | None:
    origin = Origin(f"--set {text}")
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        return Problem(origin, "", "expected KEY=VALUE with a dotted key, e.g. config.lr=0.01")
    parts = _split_override_key(key.strip())
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            field = ".".join(parts[: depth + 1])
            return Problem(origin, field, f"is {child!r}, not a mapping; cannot set {key} inside it")
        node = child
    if parts[:2] == ["sweep", "space"] and len(parts) == 4:
        node.clear()  # a new distribution replaces the dimension, it does not join it
    node[parts[-1]] = parse_value(raw)
    for depth in range(1, len(parts) + 1):
        origins[tuple(parts[:depth])] = origin
    return None


def _split_override_key(key: str) -> list[str]:
    # Search-space keys are themselves dotted (sweep.space.config.lr.loguniform=[...]).
    if key.startswith("sweep.space.config."):
        rest = key[len("sweep.space."):].split(".")
        tail = rest[-1] if rest[-1] in ("uniform", "loguniform", "randint", "choice", "grid") else None
        space_key = ".".join(rest[:-1] if tail else rest)
        return ["sweep", "space", space_key] + ([tail] if tail else [])
    return key.split(".")


# --------------------------------------------------------------------------------- checking


class _Locator:
    def __init__(self, origins: Origins, default: Origin):
        self.origins = origins
        self.default = default

    def __call__(self, loc: tuple[Any, ...]) -> Origin:
        path = tuple(str(part) for part in loc)
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path[:-1]
        return self.origins.get((), self.default)


def _problem_from_pydantic(item: dict[str, Any], where: _Locator, root: type[BaseModel],
                           prefix: tuple[str, ...] = ()) -> Problem:
    inner = tuple(str(p) for p in item["loc"])
    data_form = None
    if root is JobSpec and len(inner) > 1 and inner[0] == "data" and inner[1] in DATA_FORMS:
        # pydantic names the form of the data block it chose (digits, shards) in the location;
        # the spec has no such key.
        data_form = DATA_FORMS[inner[1]]
        inner = inner[:1] + inner[2:]
    loc = prefix + inner
    field = ".".join(loc)
    kind = item["type"]
    message = item["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    message = re.sub(r" or instance of \w+", "", message)  # runyard's class names mean nothing in a spec
    if kind == "extra_forbidden":
        allowed = (sorted(data_form.model_fields) if data_form and len(inner) == 2
                   else _allowed_keys(root, inner[:-1]))
        message = f"unknown key {loc[-1]!r}"
        if allowed:
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            form = f" for {DATA_FORM_NAMES[data_form]}" if data_form else ""
            message += f"{hint}; expected one of{form}: {', '.join(allowed)}"
    elif kind == "missing":
        message = "missing: this field is required"
    elif kind not in ("value_error", "assertion_error"):
        message += f"; found {_short(item.get('input'))}"
    return Problem(where(loc), field, message)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """Field names of the (nested) model found at `loc`, for 'did you mean' hints."""
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        nested = _model_in(field.annotation)
        if nested is None:
            return []
        model = nested
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _check_workload_config(data: dict[str, Any], where: _Locator
                           ) -> tuple[type[Workload] | None, list[Problem]]:
    name = data.get("workload")
    if not isinstance(name, str):
        return None, []  # reported by the JobSpec validation
    try:
        workload_cls = workloads.get(name)
    except KeyError:
        known = workloads.available() + sorted(workloads.entry_point_names())
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return None, [Problem(where(("workload",)), "workload",
                              f"unknown workload {name!r}{hint}; expected one of: {', '.join(known)}, "
                              "an import path package.module:Class, or a name registered under "
                              f"the entry-point group {workloads.ENTRY_POINT_GROUP}")]
    except workloads.WorkloadNotLoadable as error:
        return None, [Problem(where(("workload",)), "workload", str(error))]
    problems = [
        Problem(where((block,)), block,
                f"{name} does not read this block; remove it (it reads "
                f"{', '.join(workload_cls.blocks + ('resources',))}; a workload class lists "
                "the blocks it reads in `blocks`)")
        for block in ("env", "rollout", "data")
        if data.get(block) is not None and block not in workload_cls.blocks
    ]
    config = data.get("config") or {}
    if not isinstance(config, dict):
        return workload_cls, problems  # reported by the JobSpec validation
    try:
        workload_cls.Config.model_validate(config)
    except ValidationError as error:
        problems += [_problem_from_pydantic(item, where, workload_cls.Config, prefix=("config",))
                     for item in error.errors()]
    return workload_cls, problems


def _check_against_workload(spec: JobSpec, workload_cls: type[Workload], config: BaseModel,
                            where: _Locator) -> list[Problem]:
    problems: list[Problem] = []
    metrics = workload_cls.declared_metrics(config)
    known = ", ".join(sorted(metrics))

    def unknown_metric(field: tuple[str, ...], name: str) -> Problem:
        close = difflib.get_close_matches(name, list(metrics), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return Problem(where(field), ".".join(field),
                       f"{spec.workload} does not report {name!r}{hint}; it reports: {known}")

    if spec.stop.empty and not workload_cls.ends_by_itself:
        problems.append(Problem(where(("stop",)), "stop",
                                f"{spec.workload} runs until a stop condition ends it: give at "
                                "least one of iterations, time_s or a metric threshold, e.g. "
                                "stop: {iterations: 100}"))
    for name in spec.stop.thresholds:
        if name not in metrics:
            problems.append(unknown_metric(("stop", name), name))
    if spec.sweep is not None:
        if spec.sweep.metric not in metrics:
            problems.append(unknown_metric(("sweep", "metric"), spec.sweep.metric))
        elif spec.sweep.mode not in (None, metrics[spec.sweep.metric]):
            better = metrics[spec.sweep.metric]
            problems.append(Problem(where(("sweep", "mode")), "sweep.mode",
                                    f"{spec.sweep.mode}, but {spec.sweep.metric} is better when "
                                    f"{'higher' if better == 'max' else 'lower'}; "
                                    f"write mode: {better}, or leave mode out"))
        problems += _check_space(spec, workload_cls, where)
        if spec.population_based:
            problems += _check_population(spec, where)
    context = workload_context(spec)
    for text in workload_cls.check_spec(config, context):
        field, _, message = text.partition(": ")
        problems.append(Problem(where(tuple(field.split("."))), field, message))
    return problems


def _check_space(spec: JobSpec, workload_cls: type[Workload], where: _Locator) -> list[Problem]:
    """Every search dimension names a config field, and every value it can take is valid."""
    problems = []
    fields = sorted(workload_cls.Config.model_fields)
    for key, distribution in spec.sweep.space.items():
        loc = ("sweep", "space", key)
        name = key.removeprefix("config.").split(".")[0]
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean 'config.{close[0]}'?)" if close else ""
            problems.append(Problem(where(loc), ".".join(loc),
                                    f"{spec.workload} has no config field {name!r}{hint}; "
                                    f"its fields: {', '.join(fields)}"))
            continue
        values = distribution.args
        for value in values:
            trial_config = set_dotted(dict(spec.config), key.removeprefix("config."), value)
            try:
                workload_cls.Config.model_validate(trial_config)
            except ValidationError as error:
                reason = error.errors()[0]["msg"].replace("Input should be", "expected")
                problems.append(Problem(where(loc + (distribution.kind,)), ".".join(loc),
                                        f"value {value!r} is invalid for {key}: {reason}"))
                break
    return problems


def _check_population(spec: JobSpec, where: _Locator) -> list[Problem]:
    """What population-based training needs of the rest of the spec."""
    sweep, problems = spec.sweep, []

    def problem(loc: tuple[str, ...], message: str) -> None:
        problems.append(Problem(where(loc), ".".join(loc), message))

    every, interval = spec.checkpoint.every, sweep.pbt.interval
    if every == 0 or interval % every:
        divisors = [d for d in range(interval, 0, -1) if interval % d == 0][:3]
        problem(("checkpoint", "every"),
                f"{every} does not divide sweep.pbt.interval ({interval}): a member is copied "
                f"at each interval and must have a checkpoint then; set checkpoint.every to a "
                f"divisor of {interval} ({', '.join(map(str, divisors))})")
    if sweep.scheduler is not None:
        problem(("sweep", "scheduler"), "search: pbt is the scheduler (it pauses, copies and "
                "perturbs members) and takes no other: remove scheduler:, or use search: random "
                "with it")
    for key, distribution in sweep.space.items():
        if distribution.kind == "grid":
            problem(("sweep", "space", key), "search: pbt perturbs every dimension, and a grid "
                    "is enumerated, not perturbed: give it as choice: [...]")
    if spec.resources.workers > 1:
        problem(("resources", "workers"), "search: pbt pauses and restores members as single "
                "processes; a data-parallel trial (workers > 1) cannot be a member: set "
                "workers: 1, or use search: random")
    return problems


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `tree` with the value at a dotted path replaced (intermediate dicts copied)."""
    head, _, rest = dotted.partition(".")
    copy = dict(tree)
    copy[head] = set_dotted(dict(copy.get(head) or {}), rest, value) if rest else value
    return copy
