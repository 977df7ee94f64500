"""YAML reading that remembers where every value came from.

A spec error must name the file and line of the offending field, so loading keeps, next to
the data, a map from each dotted field path to its (file, line). The loader also reads
`1e-3` as a float (YAML 1.2 does; PyYAML's 1.1 rules would read it as a string), because
that is how researchers write learning rates.

Input is bounded before anything is built from it, so a hostile or broken file is refused in
well under a second instead of exhausting memory or the stack: a spec is at most
MAX_SPEC_BYTES long, nests at most MAX_DEPTH mappings/lists deep, and expands, with every
YAML alias (`*name`) written out, to at most MAX_VALUES values (a "billion laughs" file of
nested aliases is a few hundred bytes that expand to 10^9 values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

Path_ = tuple[str, ...]

MAX_SPEC_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 100_000


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
    (PyYAML would silently keep the last one). Raises YamlProblem for invalid YAML and for
    input over the limits above."""
    if len(text) > MAX_SPEC_BYTES:
        raise YamlProblem(Origin(source), too_long(len(text)))
    _check_depth(text, source)
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        _check_expansion(node, source)
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


def too_long(size: int) -> str:
    return (f"the file is {size:,} bytes, over the limit of {MAX_SPEC_BYTES:,} bytes for a job "
            "spec (MAX_SPEC_BYTES); keep data out of the spec and point to it (data.path)")


def _check_depth(text: str, source: str) -> None:
    # PyYAML's parser is iterative but its composer recurses once per level, so the depth is
    # measured on the event stream, before any node is composed.
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_SpecLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise YamlProblem(
                        Origin(source, event.start_mark.line + 1),
                        f"nested more than {MAX_DEPTH} mappings/lists deep (MAX_DEPTH); a job "
                        "spec needs a handful of levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError:
        return  # reported, with its line, by the full parse that follows


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Count the values the document holds with aliases expanded, without expanding them:
    an aliased node is the same object wherever it is used, so each node's expanded size is
    computed once, after its children's, and reused (a depth-first walk with its own stack;
    a chain of aliases can be deeper than Python's)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            in_progress.discard(id(node))
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_VALUES:
                raise YamlProblem(
                    Origin(source, node.start_mark.line + 1),
                    f"expands to more than {MAX_VALUES:,} values once its aliases (*name) "
                    "are written out (MAX_VALUES); is an alias used many times over, inside "
                    "other aliases?")
            sizes[id(node)] = total
            continue
        if id(node) in sizes:
            continue
        in_progress.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in in_progress:
                raise YamlProblem(Origin(source, child.start_mark.line + 1),
                                  "an alias (*name) is used inside the value it names, so it "
                                  "never ends; write the value out instead")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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

