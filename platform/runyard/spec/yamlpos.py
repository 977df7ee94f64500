"""YAML reading that remembers where every value came from.

A spec error must name the file and line of the offending field, so loading keeps, next to
the data, a map from each dotted field path to its (file, line). The loader also reads
`1e-3` as a float (YAML 1.2 does; PyYAML's 1.1 rules would read it as a string), because
that is how researchers write learning rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Origin:
    """Where a value was written: a file and 1-based line, or a `--set` override."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source


class _SpecLoader(yaml.SafeLoader):
    pass


_FLOAT_1_2 = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"
)
_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


class YamlProblem(Exception):
    def __init__(self, origin: Origin, message: str):
        super().__init__(f"{origin}: {message}")
        self.origin = origin
        self.message = message


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Path_, Origin], list[YamlProblem]]:
    """Parse one YAML document. Returns (data, origins, problems); duplicate keys are problems
    (PyYAML would silently keep the last one)."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        # An unclosed [..] or {..} is reported where the file ends; the line to fix is where
        # it opens (the context mark). Other problems are where the parser stumbled.
        flow = "flow" in (error.context or "")
        mark = (error.context_mark if flow else None) or error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        what = error.problem or str(error)
        if flow and error.problem_mark:
            what = f"{error.context}, {what} (line {error.problem_mark.line + 1})"
        raise YamlProblem(Origin(source, line), f"not valid YAML: {what}") from None
    finally:
        loader.dispose()
    origins: dict[Path_, Origin] = {}
    problems: list[YamlProblem] = []
    _walk(node, (), source, origins, problems)
    return data, origins, problems


def _walk(node: yaml.Node, path: Path_, source: str, origins: dict, problems: list) -> None:
    origins[path] = Origin(source, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(YamlProblem(
                    Origin(source, line),
                    f"{'.'.join(path + (key,))}: key written twice (first on line {seen[key]}); "
                    "keep one",
                ))
            seen[key] = line
            _walk(value_node, path + (key,), source, origins, problems)
            origins[path + (key,)] = Origin(source, line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (str(index),), source, origins, problems)


def parse_value(text: str) -> Any:
    """A `--set` value, read as YAML so `--set config.hidden=[64,64]` gives a list."""
    try:
        return yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError:
        return text


def read_file(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")
