"""Where a command workload's program reports its metrics, read without changing the program.

Three sources, each turning what the program writes into `Report`s:

- lines (`reports: stdout` or `fd`): a JSON object, or `name=value` pairs separated by spaces,
  commas or semicolons. A value may be printed the way Python prints a one-element list or
  array (`[15.]`, `array([15.], dtype=float32)`, `tensor(0.5)`): it is read as its number, so
  a script's `print(f"global_step={step}, episodic_return={info['r']}")` needs no edit.
  A line that holds a `name=value` pair but does not read as a report is a near miss: the
  workload counts them and quotes the first, so a report format that never matched is named
  instead of silently ignored.
- TensorBoard event files (`reports: tensorboard`): the scalar summaries that
  `torch.utils.tensorboard`, tensorboardX or TensorFlow write, every tag a metric at the
  event's step. The records are TFRecord frames around `Event` protocol buffers (tensorboardX's
  copy of the message, which Ray already brings); frames are read as they are appended.
- the trial's MLflow run (`reports: mlflow`): the program logs there itself (runyard hands
  it the run), and the declared metrics are read back as they arrive, through a `RunLink`
  the executor provides (workloads never import MLflow).

The last two give values by step; `StepGroups` makes one report of each step's values.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"[A-Za-z_][\w.\-/]*")
# One `name=value` pair and the separator after it. A value is a bracketed list, a call such
# as array([...], dtype=float32) (one level of parentheses), or a run of characters up to
# the next separator.
_PAIR = re.compile(r"""\s*(?P<key>[A-Za-z_][\w.\-/]*)\s*=\s*
                       (?P<value>\[[^\]]*\]|[A-Za-z_][\w.]*\([^)]*\)|[^\s,;]+)
                       \s*(?:[,;]\s*)?""", re.X)
# A pair anywhere in a line: what makes an unparsed line a near miss.
_ANY_PAIR = re.compile(r"(?<![\w.\-/])[A-Za-z_][\w.\-/]*=\S")
_CHECKPOINT_FLAGS = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class Report:
    """One report: its numeric values, the checkpoint it says is complete (True for the whole
    checkpoint directory, a name for one directory in it, False for none), and the program's
    own step for these values where the source knows it (a TensorBoard event's step)."""

    values: dict[str, float]
    checkpoint: bool | str = False
    step: int | None = None


def number(text: str) -> float | None:
    """A value as the program printed it, as a number: `0.25`, `nan`, `[15.]`,
    `array([15.], dtype=float32)`, `np.float64(0.5)`, `tensor(0.5, grad_fn=...)`; None for
    anything else (a word, a list of several numbers)."""
    text = text.strip()
    while call := re.fullmatch(r"[A-Za-z_][\w.]*\((.*)\)", text, re.S):
        text = _first_argument(call.group(1))
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip().removesuffix(",").strip()
        if not text or re.search(r"[\s,\[]", text):
            return None  # empty, nested, or more than one element
    try:
        return float(text)
    except ValueError:
        return None


def _first_argument(arguments: str) -> str:
    """`[15.]` of `[15.], dtype=float32`: up to the first comma outside brackets."""
    depth = 0
    for index, char in enumerate(arguments):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            return arguments[:index].strip()
    return arguments.strip()


def parse_report(line: str) -> Report | None:
    """The report in one line of the program's output, or None when the line is plain output."""
    text = line.strip()
    if text.startswith("{"):
        return _json_report(text)
    values: dict[str, float] = {}
    checkpoint: bool | str = False
    position = 0
    while position < len(text):
        pair = _PAIR.match(text, position)
        if pair is None or pair.end() == position:
            return None
        position = pair.end()
        key, value = pair.group("key"), pair.group("value")
        if key == "checkpoint":
            checkpoint = _CHECKPOINT_FLAGS.get(value.lower(), value)
            continue
        parsed = number(value)
        if parsed is None:
            return None
        values[key] = parsed
    if not values and checkpoint is False:
        return None
    return Report(values, checkpoint)


def is_near_miss(line: str) -> bool:
    """Whether an unparsed line looks like a report someone meant to write (it holds a
    `name=value` pair), and deserves a word in the warnings."""
    return bool(_ANY_PAIR.search(line))


def _json_report(text: str) -> Report | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    values = {}
    for key, value in data.items():
        if key == "checkpoint" or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            values[key] = float(value)
        elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], int | float):
            values[key] = float(value[0])
    mark = data.get("checkpoint", False)
    checkpoint = mark if mark is True or (isinstance(mark, str) and mark) else False
    if not values and checkpoint is False:
        return None
    return Report(values, checkpoint)


# ------------------------------------------------------------------- values by step

Point = tuple[int, str, float]  # (step, metric, value)


@dataclass
class StepGroups:
    """Points as they arrive, one report per step: a step is complete once a later step has
    arrived (values of one step are written together), or when nothing more can arrive."""

    by_step: dict[int, dict[str, float]] = field(default_factory=dict)

    def add(self, points: list[Point]) -> None:
        for step, name, value in points:
            self.by_step.setdefault(step, {})[name] = value

    def complete(self, final: bool) -> list[Report]:
        newest = max(self.by_step, default=None)
        done = [step for step in sorted(self.by_step) if final or step != newest]
        return [Report(self.by_step.pop(step), step=step) for step in done]


class RunLink(Protocol):
    """The trial's MLflow run, as the command workload's program and reader need it."""

    def environment(self) -> dict[str, str]:
        """The variables that make the program's MLflow calls land in the trial's run."""

    def read(self, names: Collection[str], since_ms: int) -> list[Point]:
        """Points of these metrics logged since `since_ms` (epoch ms) not returned before."""


# ---------------------------------------------------------------- TensorBoard event files

EVENT_FILE_MARK = "tfevents"  # in every event file's name: events.out.tfevents.<time>.<host>...


@dataclass
class _EventFile:
    offset: int = 0  # bytes read so far: whole frames only


@dataclass
class TensorBoardReader:
    """The scalars appended to every event file under `root` since the last `read()`.

    A frame is a little-endian uint64 length, its masked CRC (4 bytes), the data, and the
    data's masked CRC (4 bytes); a frame not yet written whole is read on a later call.
    Symbolic links are not followed: they lead back into the project, whose event files
    belong to no trial."""

    root: Path
    files: dict[Path, _EventFile] = field(default_factory=dict)

    def event_files(self) -> list[Path]:
        found = []
        for path in self._walk(self.root):
            if EVENT_FILE_MARK in path.name:
                found.append(path)
        return sorted(found)

    def _walk(self, folder: Path) -> Iterator[Path]:
        try:
            entries = list(folder.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                yield from self._walk(entry)
            elif entry.is_file():
                yield entry

    def read(self) -> list[Point]:
        """(step, tag, value) of every scalar written since the last call, file by file."""
        from tensorboardX.proto import event_pb2  # only trials that read event files pay for it

        scalars = []
        for path in self.event_files():
            state = self.files.setdefault(path, _EventFile())
            with open(path, "rb") as stream:
                stream.seek(state.offset)
                data = stream.read()
            position = 0
            while len(data) - position >= 12:
                (length,) = struct.unpack_from("<Q", data, position)
                end = position + 12 + length + 4
                if end > len(data):
                    break
                event = event_pb2.Event.FromString(data[position + 12:position + 12 + length])
                scalars.extend((event.step, tag, value) for tag, value in _scalars(event))
                position = end
            state.offset += position
        return scalars


def _scalars(event) -> Iterator[tuple[str, float]]:
    """The scalar values in one event: `simple_value` (PyTorch, tensorboardX) or a one-number
    tensor under the scalars plugin (TensorFlow 2)."""
    if not event.HasField("summary"):
        return
    for value in event.summary.value:
        if value.HasField("simple_value"):
            yield value.tag, float(value.simple_value)
        elif value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
            tensor = value.tensor
            for numbers in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
                if len(numbers) == 1:
                    yield value.tag, float(numbers[0])
                    break
            else:
                decoded = _tensor_content(tensor)
                if decoded is not None:
                    yield value.tag, decoded


def _tensor_content(tensor) -> float | None:
    """A one-number tensor packed in `tensor_content` (TensorFlow's usual encoding)."""
    formats = {1: "<f", 2: "<d", 3: "<i", 9: "<q"}  # DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64
    fmt = formats.get(tensor.dtype)
    if fmt is None or len(tensor.tensor_content) != struct.calcsize(fmt):
        return None
    return float(struct.unpack(fmt, tensor.tensor_content)[0])
