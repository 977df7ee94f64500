"""A Ray that outlives one `runyard run`, so that the next run joins it in a tenth of a
second instead of starting a Ray of its own (~3-4 s) and stopping it again (~1.4 s).

The first run on a machine starts a *holder*: a detached process (this module's `main`) that starts an embedded Ray, writes where it listens to
`state.json`, and waits. Later runs join it while they hold the *lease*, an exclusive
`flock` on the file `lease`:

- A run that cannot take the lease (another run holds it) starts its own Ray as before, so
  runs at the same time never share CPUs they each think are theirs.
- The holder stops its Ray when nobody has held the lease for its idle time
  (RUNYARD_WARM_RAY_IDLE_S, default 10 minutes), on `runyard ray stop`, or when its Ray
  dies. It takes the lease itself to decide, so no run can join a Ray that is stopping.
- The kernel drops a lease with its process: a run killed with SIGKILL leaves the Ray free
  for the next one, and Ray ends the dead run's workers.

Nothing is shared between users: the holder's folder is the user's own (0700, under
$XDG_RUNTIME_DIR, else /tmp/runyard-UID), its Ray has token authentication with a fresh
token kept 0600 there, and its Ray session folder is the user's own too.

Workers of a Ray started by an earlier command would see that command's environment and
folder. So the holder starts with almost no environment, and each run hands its workers
its own environment and working directory through the job's runtime_env (credentials
through a private file instead, because Ray logs a runtime_env).

RUNYARD_WARM_RAY=0 turns all of this off: every run starts and stops its own Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from runyard import processes
from runyard.tracking.redact import is_secret_key, redact_value

ENABLED_ENV = "RUNYARD_WARM_RAY"  # "0" (or off/false/no): every run starts its own Ray
FOLDER_ENV = "RUNYARD_WARM_RAY_DIR"  # the holder's folder, instead of the user's default
IDLE_ENV = "RUNYARD_WARM_RAY_IDLE_S"
DRIVER_CWD_ENV = "RUNYARD_DRIVER_CWD"  # the joining run's working directory, for its workers
DRIVER_SECRETS_ENV = "RUNYARD_DRIVER_SECRETS_FILE"  # and the file with its credentials
DEFAULT_IDLE_S = 600.0
START_TIMEOUT_S = 120.0  # a holder's Ray on a loaded 2-core machine takes ~15 s
STOP_GRACE_S = 30.0
HOLDER_POLL_S = 1.0
HEALTH_EVERY_S = 10.0
STATE_FILE = "state.json"
LEASE_FILE = "lease"
TOKEN_FILE = "ray_auth_token"
LOG_FILE = "holder.log"
# What the holder keeps of the environment of the run that starts it: enough to find
# Python, the user's home and locale. Everything else reaches workers from each run.
HOLDER_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH",
              "VIRTUAL_ENV", "XDG_RUNTIME_DIR")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmRayKey:
    """What a run needs of the warm Ray; a run that needs another one replaces it."""

    python: str
    ray_version: str
    num_cpus: int | None  # None: all of this machine's, as Ray counts them
    num_gpus: int | None

    @classmethod
    def for_run(cls, num_cpus: int | None, num_gpus: int | None) -> WarmRayKey:
        from importlib.metadata import version

        return cls(sys.executable, version("ray"), num_cpus, num_gpus)


@dataclass(frozen=True)
class WarmRay:
    """A running holder, as its state.json says."""

    address: str  # the Ray's GCS, host:port
    holder_pid: int
    key: WarmRayKey
    token_path: str
    ray_dir: str  # holds Ray's temp folder (its session folders); removed when the holder ends
    idle_s: float
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> WarmRay:
        fields = json.loads(text)
        return cls(**{**fields, "key": WarmRayKey(**fields["key"])})

    def holder_alive(self) -> bool:
        try:  # the pid alone could be a new process's by now
            holder = psutil.Process(self.holder_pid)
            return (holder.status() != psutil.STATUS_ZOMBIE and
                    __name__ in " ".join(holder.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False


def enabled() -> bool:
    return os.environ.get(ENABLED_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def idle_s() -> float:
    return float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)


def folder() -> Path:
    """The holder's folder: RUNYARD_WARM_RAY_DIR, else $XDG_RUNTIME_DIR/runyard/warm-ray,
    else /tmp/runyard-UID/warm-ray."""
    named = os.environ.get(FOLDER_ENV)
    if named:
        return Path(named).resolve()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "runyard" if runtime else Path(tempfile.gettempdir()) / f"runyard-{os.getuid()}"
    return base / "warm-ray"


def ray_dir_for(place: Path) -> Path:
    """The folder of the Ray temp folder of the holder in `place`: short, because Ray puts
    Unix sockets in it (at most 107 bytes a path), and named after `place` so that two
    holders never meet."""
    digest = hashlib.sha256(str(place).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"runyard-ray-{os.getuid()}-{digest}"


class NotPrivate(Exception):
    """A folder the warm Ray would use is not this user's alone."""


def private_folder(path: Path) -> Path:
    """`path`, created 0700 if missing, and refused unless this user owns it, nobody else
    can read or write it, and nobody else can swap it (its parent is this user's or root's,
    and writable by others only with the sticky bit, as /tmp): someone else could otherwise
    plant a state file, or read a token."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mine, parent = path.lstat(), path.parent.stat()
    if path.is_symlink() or mine.st_uid != os.getuid() or mine.st_mode & 0o077:
        raise NotPrivate(f"{path} is not this user's own folder (owner uid {mine.st_uid}, "
                         f"mode {oct(mine.st_mode & 0o777)}); set {FOLDER_ENV} to one that is")
    if parent.st_uid not in (0, os.getuid()) or (parent.st_mode & 0o022 and
                                                 not parent.st_mode & stat.S_ISVTX):
        raise NotPrivate(f"{path.parent} can be changed by other users; set {FOLDER_ENV} to a "
                         "folder in one only you can change")
    return path


def read_state(place: Path) -> WarmRay | None:
    try:
        return WarmRay.from_json((place / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


def running() -> WarmRay | None:
    """The warm Ray of this user, if one is running now."""
    state = read_state(folder())
    return state if state is not None and state.holder_alive() else None


# ------------------------------------------------------------------------- a run's side


@contextmanager
def lease(num_cpus: int | None, num_gpus: int | None) -> Iterator[WarmRay | None]:
    """The warm Ray for one run, held for the whole block: the running one when it fits
    the run, else a new one. None when the run should start its own Ray: warm Rays are off,
    another run holds this one, or one could not be started (the reason is logged)."""
    if not enabled():
        yield None
        return
    try:
        place = private_folder(folder())
    except NotPrivate as refused:
        log.warning("runyard: not keeping Ray warm: %s", refused)
        yield None
        return
    with open(place / LEASE_FILE, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another run (or the holder, deciding to stop) has it
            yield None
            return
        try:
            yield _ready(place, WarmRayKey.for_run(num_cpus, num_gpus))
        finally:
            with contextlib.suppress(FileNotFoundError):  # the idle time counts from here
                os.utime(place / LEASE_FILE)


def _ready(place: Path, key: WarmRayKey) -> WarmRay | None:
    state = read_state(place)
    if state is not None and state.holder_alive():
        if state.key == key:
            return state
        stop_holder(state)
    try:
        return start_holder(place, key)
    except (RuntimeError, OSError, NotPrivate) as failed:
        log.warning("runyard: could not keep a Ray warm, starting one for this run: %s", failed)
        return None


def start_holder(place: Path, key: WarmRayKey) -> WarmRay:
    """Start a holder for `key` in `place` and wait for its Ray (the caller holds the lease,
    so no other holder starts meanwhile)."""
    import secrets

    (place / STATE_FILE).unlink(missing_ok=True)
    token = processes.write_private(place / TOKEN_FILE, secrets.token_hex(32))
    env = {name: os.environ[name] for name in HOLDER_ENV if name in os.environ}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # Not `-m`: runyard.launch imports this module before runpy would run it as __main__.
    argv = [key.python, "-c", f"import sys; from {__name__} import main; sys.exit(main())",
            str(place), "--idle-s", str(idle_s())]
    argv += ["--num-cpus", str(key.num_cpus)] if key.num_cpus is not None else []
    argv += ["--num-gpus", str(key.num_gpus)] if key.num_gpus is not None else []
    with open(place / LOG_FILE, "w") as log_file:
        # Its own session: a Ctrl-C meant for this run never reaches it, and it outlives us.
        holder = processes.start_group(argv, cwd=place, env=env, stdin=subprocess.DEVNULL,
                                       stdout=log_file, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if holder.poll() is not None:
            raise RuntimeError(f"the warm Ray's holder exited ({holder.returncode}): "
                               f"{processes.tail(place / LOG_FILE, 10)}")
        state = read_state(place)
        return state is not None and state.holder_pid == holder.pid

    try:
        processes.wait_until(ready, START_TIMEOUT_S,
                             lambda: f"the warm Ray did not start in {START_TIMEOUT_S:.0f} s")
    except RuntimeError:
        processes.stop_group(holder.pid, STOP_GRACE_S, holder)
        raise
    state = read_state(place)
    assert state is not None
    return state


def stop_holder(state: WarmRay) -> None:
    """Stop a holder and its Ray (SIGTERM: it stops Ray itself), then remove what is left."""
    if state.holder_alive():
        processes.stop_group(state.holder_pid, STOP_GRACE_S)
    shutil.rmtree(state.ray_dir, ignore_errors=True)


def stop(place: Path | None = None) -> WarmRay | None:
    """`runyard ray stop`: the warm Ray that was stopped, None when none was running.
    RuntimeError when a run is using it (stopping it would end that run's trials)."""
    place = place or folder()
    if not place.is_dir():
        return None
    with open(place / LEASE_FILE, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError("a runyard run is using the warm Ray; it stops by itself "
                               "after the run (or end the run first)") from None
        state = read_state(place)
        if state is None or not state.holder_alive():
            return None
        stop_holder(state)
        return state


@contextmanager
def driver_runtime_env(held: WarmRay, env_vars: dict[str, str]) -> Iterator[dict]:
    """The runtime_env of a run that joins the warm Ray: its workers get this run's
    environment (Ray's own settings belong to the warm Ray and stay out) and start in its
    working directory, as they would under a Ray the run had started itself.

    Ray's runtime-env agent writes a job's env_vars into its log, so variables that look
    like credentials (tracking.redact's rule) travel another way: in a file only this user
    can read, which each worker loads at start and which is deleted when the run ends."""
    mine = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    secret = {name: value for name, value in mine.items()
              if is_secret_key(name) or redact_value(value) != value}
    plain = {name: value for name, value in mine.items() if name not in secret}
    plain[DRIVER_CWD_ENV] = os.getcwd()
    secrets_file = Path(held.token_path).with_name(f"run-{os.getpid()}-{time.monotonic_ns()}.env.json")
    if secret:
        processes.write_private(secrets_file, json.dumps(secret))
        plain[DRIVER_SECRETS_ENV] = str(secrets_file)
    try:
        yield {"env_vars": {**plain, **env_vars},
               "worker_process_setup_hook": f"{__name__}.enter_driver_context"}
    finally:
        secrets_file.unlink(missing_ok=True)


def enter_driver_context() -> None:
    """Run in every worker of a run that joined the warm Ray, before its first task: the
    run's working directory and the variables that did not travel in the runtime_env."""
    os.chdir(os.environ[DRIVER_CWD_ENV])
    secrets_file = os.environ.pop(DRIVER_SECRETS_ENV, None)
    if secrets_file:
        with contextlib.suppress(FileNotFoundError):  # the run has ended
            os.environ.update(json.loads(Path(secrets_file).read_text()))


# ------------------------------------------------------------------------ the holder


def serve(place: Path, num_cpus: int | None, num_gpus: int | None, idle: float) -> int:
    """The holder's life: start Ray, say where it is, wait until idle, stopped or dead."""
    import ray

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ray_dir = ray_dir_for(place)
    if ray_dir.is_dir() and ray_dir.stat().st_uid == os.getuid():
        shutil.rmtree(ray_dir)  # a killed holder's; the caller holds the lease
    # Every Ray process opens its temp folder to everyone (0777), as for a /tmp/ray shared by
    # all users: it is a folder inside this user's own one.
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=True,
             _temp_dir=str(private_folder(ray_dir) / "ray"), logging_level=logging.WARNING)
    state = WarmRay(address=ray.get_runtime_context().gcs_address, holder_pid=os.getpid(),
                    key=WarmRayKey.for_run(num_cpus, num_gpus),
                    token_path=os.environ["RAY_AUTH_TOKEN_PATH"], ray_dir=str(ray_dir),
                    idle_s=idle, started_at=time.time())
    staged = place / f"{STATE_FILE}.{os.getpid()}"
    staged.write_text(state.to_json())
    staged.replace(place / STATE_FILE)
    print(f"warm Ray at {state.address} for {place}, idle time {idle:.0f} s", flush=True)
    held = open(place / LEASE_FILE, "a")  # kept open: the lock taken last goes with the process
    checked = time.monotonic()
    try:
        while not stopping:
            time.sleep(HOLDER_POLL_S)
            if _idle_past(held, place / LEASE_FILE, state.started_at, idle):
                print("idle: stopping", flush=True)
                break
            if time.monotonic() - checked > HEALTH_EVERY_S:
                checked = time.monotonic()
                if not any(node.get("Alive") for node in ray.nodes()):
                    print("Ray's node died: stopping", flush=True)
                    break
    finally:
        if read_state(place) == state:
            (place / STATE_FILE).unlink(missing_ok=True)
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    return 0


def _idle_past(held, lease_path: Path, started_at: float, idle: float) -> bool:
    """Whether no run has held the lease for `idle` seconds. When so, the holder keeps the
    lease from then on, so that no run joins a Ray that is stopping."""
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a run is using it
        return False
    if time.time() - max(lease_path.stat().st_mtime, started_at) > idle:
        return True
    fcntl.flock(held, fcntl.LOCK_UN)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{__name__}.main",
                                     description="The warm Ray's holder (started by runyard run).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--num-cpus", type=int)
    parser.add_argument("--num-gpus", type=int)
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S)
    args = parser.parse_args(argv)
    return serve(args.folder, args.num_cpus, args.num_gpus, args.idle_s)
