"""A config reference generated from the pydantic models: each field's dotted key, type,
default and description (with its bounds), as `runyard workloads NAME` prints it and the
README's field reference lists it. Written from the models, so it cannot drift from them."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


@dataclasses.dataclass(frozen=True)
class FieldRow:
    key: str          # dotted, e.g. policy.hidden
    type: str         # e.g. "int >= 1", "sgd | adam", "float | null"
    default: str      # YAML-ish text; "required" when there is none
    description: str


def field_rows(model: type[BaseModel], prefix: str = "") -> list[FieldRow]:
    """One row per field of `model`; a field that is itself a model is listed key by key."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _nested_model(info.annotation)
        if nested is not None:
            rows += field_rows(nested, prefix=f"{key}.")
            continue
        bounds = [_bound(item) for item in info.metadata]
        type_text = ", ".join([type_name(info.annotation)] + [b for b in bounds if b])
        rows.append(FieldRow(key, type_text, _default_text(info), info.description or ""))
    return rows


def type_name(annotation: Any) -> str:
    """A reader's name for a type: `int | null`, `sgd | adam`, `list of int`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    if origin is dict:
        return f"mapping of {type_name(args[1])}" if len(args) == 2 and args[1] is not Any else "mapping"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


_BOUNDS = {annotated_types.Gt: ">", annotated_types.Ge: ">=", annotated_types.Lt: "<",
           annotated_types.Le: "<=", annotated_types.MinLen: "length >=",
           annotated_types.MaxLen: "length <="}


def _bound(item: Any) -> str:
    for kind, symbol in _BOUNDS.items():
        if isinstance(item, kind):
            value = getattr(item, dataclasses.fields(item)[0].name)
            return f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}"
    return ""


def _default_text(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    return _yaml_text(value)


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return _yaml_text(value.model_dump(mode="json"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def render_rows(rows: list[FieldRow], indent: str = "  ") -> list[str]:
    """Aligned text lines: key, type, default, description."""
    if not rows:
        return [f"{indent}(no fields)"]
    widths = [max(len(getattr(r, col)) for r in rows) for col in ("key", "type", "default")]
    return [f"{indent}{r.key:<{widths[0]}}  {r.type:<{widths[1]}}  {r.default:<{widths[2]}}  "
            f"{r.description}".rstrip() for r in rows]
