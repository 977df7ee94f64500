"""What `runyard submit` ships of a project: its code and small inputs, not its byproducts.

Ray packs the job's working dir itself, leaving out the runtime env's `excludes` and what
the `.gitignore` and `.rayignore` of each folder it walks name (each matched relative to its
own folder). This module walks the project the same way, first, so that runyard can add
what a researcher's project holds and a job never needs — Python environments (a folder with
`pyvenv.cfg` or `conda-meta/`, wherever it is), TensorBoard, MLflow and W&B output, files
over the per-file limit — say what will ship (files, MiB) and refuse a project over the
upload limit naming its largest paths, before anything reaches the cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from runyard.errors import UserError

# gitignore-style, relative to the project (Ray matches them with gitwildmatch too). A leading
# "/" anchors to the project root, so platform/runyard/data/ (code) still ships; no trailing
# "/", so the folder itself is skipped rather than shipped empty.
DEFAULT_EXCLUDES = (
    "/.runyard", "/.venv", "/venv", "/data", "/build", "/dist",
    ".git", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
    # What training scripts write where they run: TensorBoard, MLflow, W&B, Lightning output.
    "/runs", "/mlruns", "/wandb", "/lightning_logs", "/tb_logs", "*tfevents*", "mlflow.db",
)
IGNORE_FILES = (".gitignore", ".rayignore")
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")  # a folder holding one is a Python env
DEFAULT_MAX_FILE_MB = 10.0
DEFAULT_MAX_UPLOAD_MB = 100.0
MIB = 1024 * 1024


@dataclass
class Shipment:
    """The project as it will travel: the files that ship with their sizes, and what was
    left out that a researcher may want to know about."""

    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    environments: list[str] = field(default_factory=list)  # Python environment folders
    large_files: list[str] = field(default_factory=list)  # over the per-file limit

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def excludes(self) -> list[str]:
        """The runtime env's excludes that leave out what this walk left out."""
        return [*DEFAULT_EXCLUDES, *(f"/{path}" for path in self.environments + self.large_files)]

    def largest(self, count: int = 5) -> list[tuple[str, int]]:
        return sorted(self.files.items(), key=lambda item: -item[1])[:count]

    def summary(self) -> str:
        return f"{len(self.files)} files, {self.total_bytes / MIB:.1f} MiB"


def shipment(root: Path, extra_excludes: tuple[str, ...] = (),
             max_file_mb: float = DEFAULT_MAX_FILE_MB) -> Shipment:
    """Walk the project as Ray will pack it, leaving out environments and byproducts."""
    root = root.resolve()
    excludes = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_EXCLUDES, *extra_excludes])
    found = Shipment()
    limit = max_file_mb * MIB

    def walk(folder: Path, ignores: list[tuple[Path, pathspec.PathSpec]]) -> None:
        ignores = ignores + [(folder, spec) for spec in _ignore_specs(folder)]
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            return
        for entry in entries:
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            if _excluded(path, relative, entry.is_dir(follow_symlinks=False), excludes, ignores):
                continue
            if entry.is_dir(follow_symlinks=False):
                if any((path / marker).exists() for marker in ENVIRONMENT_MARKERS):
                    found.environments.append(relative)
                    continue
                walk(path, ignores)
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                if size > limit:
                    found.large_files.append(relative)
                else:
                    found.files[relative] = size

    walk(root, [])
    return found


def check_size(found: Shipment, max_upload_mb: float) -> None:
    """Refuse a project that would go over the upload limit, naming what makes it big."""
    if found.total_bytes <= max_upload_mb * MIB:
        return
    largest = "\n".join(f"  {size / MIB:8.1f} MiB  {path}" for path, size in found.largest())
    raise UserError(
        f"the project to ship is {found.total_bytes / MIB:.1f} MiB in {len(found.files)} files, "
        f"over the {max_upload_mb:g} MiB limit (--max-upload-mb). Its largest files:\n{largest}\n"
        "Leave out what the job does not need with a .gitignore or .rayignore line, keep data "
        "in storage (see `runyard data`), or raise --max-upload-mb.")


def _ignore_specs(folder: Path) -> list[pathspec.PathSpec]:
    specs = []
    for name in IGNORE_FILES:
        try:
            lines = (folder / name).read_text().splitlines()
        except OSError:
            continue
        specs.append(pathspec.GitIgnoreSpec.from_lines(lines))
    return specs


def _excluded(path: Path, relative: str, is_dir: bool, excludes: pathspec.PathSpec,
              ignores: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    candidates = [relative + "/", relative] if is_dir else [relative]
    if any(excludes.match_file(candidate) for candidate in candidates):
        return True
    for folder, spec in ignores:
        inner = path.relative_to(folder).as_posix()
        if any(spec.match_file(candidate) for candidate in ([inner + "/", inner] if is_dir else [inner])):
            return True
    return False
