"""What a run was made from: the code's git commit, the installed packages, runyard's version."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import runyard


def git_commit(directory: Path) -> str:
    """HEAD of the repository holding `directory`, with `-dirty` if files changed; or 'none'."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "none"
    return commit + ("-dirty" if dirty else "")


def pip_freeze() -> str:
    """Installed distributions as `name==version` lines, like `pip freeze`, without a subprocess."""
    lines = {f"{dist.metadata['Name']}=={dist.version}" for dist in metadata.distributions()
             if dist.metadata["Name"]}
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def runyard_version() -> str:
    return runyard.__version__
