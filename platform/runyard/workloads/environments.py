"""The program's own Python environment: a virtualenv layered on runyard's, built once per
machine and reused while its requirements are the same.

Layered: the virtualenv's site-packages comes first, and a `.pth` file puts runyard's own
site-packages after it. What the spec pins (gymnasium==0.29.1) shadows runyard's version for
the program alone; everything else it imports (torch, numpy) is runyard's, not installed
again. pip runs against the virtualenv's interpreter, sees the layered packages as installed,
and installs only what differs. runyard's own trial process never imports from it.

Why not Ray's `runtime_env` with pip: it builds per job (not per machine and content), it
replaces the trial process's packages (runyard's included) rather than the program's alone,
and the command workload's program is not a Ray worker at all.

The cache: `$RUNYARD_ENVIRONMENTS` or `~/.cache/runyard/environments`, one folder per hash of
(runyard's interpreter, the requirement lines). A machine builds an environment once: a lock
file serialises trials that want the same one, and a marker written last tells a finished
build from one interrupted halfway, which is removed and built again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from runyard.workloads.blocks import EnvironmentSpec

COMPLETE = "runyard-environment.json"  # written last: the build finished
BUILD_TIMEOUT_S = 1800.0
PIP_TAIL_LINES = 15


class EnvironmentFailed(RuntimeError):
    """pip could not install the requirements; the message names them and pip's reason."""


def cache_root() -> Path:
    """Where this machine keeps the environments: $RUNYARD_ENVIRONMENTS, else the user's cache
    folder, else (a node whose home is read-only) the temporary folder."""
    configured = os.environ.get("RUNYARD_ENVIRONMENTS")
    if configured:
        return Path(configured)
    home = Path.home() / ".cache" / "runyard" / "environments"
    try:
        home.mkdir(parents=True, exist_ok=True)
        return home if os.access(home, os.W_OK) else _temporary_root()
    except OSError:
        return _temporary_root()


def _temporary_root() -> Path:
    return Path(tempfile.gettempdir()) / f"runyard-environments-{os.getuid()}"


def environment_key(spec: EnvironmentSpec) -> str:
    text = json.dumps({"python": sys.executable, "version": sys.version,
                       "requirements": list(spec.pip)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_environment(spec: EnvironmentSpec, log=None) -> Path:
    """The folder of the virtualenv that `spec` asks for, built here if this machine has none
    yet; raises EnvironmentFailed with pip's reason when it cannot be built. `log`, a
    callable, hears a line when a build starts and ends."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / environment_key(spec)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another trial building the same one: wait for it
        if (folder / COMPLETE).is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted build
        if log:
            log(f"building the program's environment ({len(spec.pip)} requirement(s)) in "
                f"{folder}")
        started = time.monotonic()
        try:
            _build(spec, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if log:
            log(f"built the program's environment in {time.monotonic() - started:.1f} s")
    return folder


def bin_dir(folder: Path) -> Path:
    return folder / ("Scripts" if os.name == "nt" else "bin")


def _build(spec: EnvironmentSpec, folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   capture_output=True, timeout=120)
    python = bin_dir(folder) / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; "
                          "print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    # runyard's site-packages after the environment's own: the layering.
    base = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(own, "_runyard_layered_on.pth").write_text(
        "\n".join(dict.fromkeys(p for p in base if Path(p).is_dir())) + "\n")
    requirements = folder / "requirements.txt"
    requirements.write_text("\n".join(spec.pip) + "\n")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--disable-pip-version-check", "-r", str(requirements)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if pip.returncode != 0:
        lines = [line for line in (pip.stderr + pip.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR:")]  # pip's reason, if it gave one
        reason = "\n".join((errors or lines)[-PIP_TAIL_LINES:]) or f"pip exited with {pip.returncode}"
        raise EnvironmentFailed(f"pip could not install {', '.join(spec.pip)}:\n{reason}")
    (folder / COMPLETE).write_text(json.dumps({"requirements": list(spec.pip)}))
