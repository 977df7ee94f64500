"""Process control for everything runyard starts and must stop again: servers, Ray nodes,
queued sweeps, a trial's program. One place for it, on psutil, below every layer.

A process runyard starts for a while is the leader of a process group of its own
(`start_group`), so that it and whatever it starts (uvicorn workers, Ray's raylet and GCS)
are stopped together (`stop_group`: SIGTERM, a grace, then SIGKILL), and a Ctrl-C at the
terminal reaches runyard alone, which then stops each group once. Only groups started here
are ever signalled, so nothing outside runyard's own processes is touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# After SIGKILL the kernel ends a process at once; this only bounds the wait for it to show.
KILL_WAIT_S = 5.0
POLL_S = 0.1


# How a program that ends with its parent starts on Linux: this stub asks the kernel to
# SIGTERM it when the thread that started it ends (prctl PR_SET_PDEATHSIG), checks that the
# parent had not already died, then becomes the program (exec keeps the request). A failed
# exec exits 127 with the reason, as a shell would. A stub rather than Popen's preexec_fn,
# which is unsafe in a process with threads.
END_WITH_PARENT_STUB = f"""\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as error:
    sys.stderr.write(f"could not start {{sys.argv[2]!r}} in {{os.getcwd()}}: {{error}}\\n")
    sys.exit(127)
"""


def start_group(argv: Sequence[str], *, end_with_parent: bool = False, **popen_options) -> subprocess.Popen:
    """`argv` as the leader of a new session and process group (so `stop_group(p.pid)` ends
    it with everything it starts). end_with_parent: the kernel sends it SIGTERM when this
    process dies, so a killed runner leaves no orphan -- on Linux, and when called from the
    main thread (the signal follows the thread that started it); elsewhere the child
    outlives a killed parent, and whoever comes next has to wait for it."""
    argv = list(argv)
    if end_with_parent and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        argv = [sys.executable, "-I", "-c", END_WITH_PARENT_STUB, str(os.getpid()), *argv]
    return subprocess.Popen(argv, start_new_session=True, **popen_options)


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes (zombies left out) of process group `pgid`."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False when no process of it is left."""
    try:
        os.killpg(pgid, signum)
        return True
    except ProcessLookupError:
        return False


def stop_group(pgid: int, grace_s: float, leader: subprocess.Popen | None = None) -> int:
    """End process group `pgid`: SIGTERM, up to `grace_s` for it to exit, then SIGKILL to
    what is left. Returns how many live processes the group had. The leader is reaped
    (waited for) when it is this process's child: by its Popen if given, else by pid."""
    members = len(group_members(pgid))
    if signal_group(pgid, signal.SIGTERM) and not _wait_until_gone(pgid, grace_s, leader):
        signal_group(pgid, signal.SIGKILL)
        _wait_until_gone(pgid, KILL_WAIT_S, leader)
    _reap(pgid, leader)
    return members


def wait_until(done: Callable[[], object], timeout_s: float, failure: Callable[[], str],
               poll_s: float = 0.3) -> None:
    """Poll `done()` (which may raise when waiting is hopeless, e.g. the process it waits for
    exited) until it is true; RuntimeError(failure()) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(failure())
        time.sleep(poll_s)


def _wait_until_gone(pgid: int, timeout_s: float, leader: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        _reap(pgid, leader)  # a leader left as a zombie still holds the group's id
        if not group_alive(pgid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def _reap(pid: int, leader: subprocess.Popen | None) -> None:
    if leader is not None:
        leader.poll()
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_processes(processes: Sequence[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM each process (the process alone, not its group: it stops its own children,
    as a driver ends its runs), up to `grace_s` for all of them together, then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_gone(pid: int, timeout_s: float | None = None, poll_s: float = 2.0) -> bool:
    """Wait until process `pid` has exited (a zombie counts as exited); False on timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes (this one excepted) whose environment has `name=value`: the ones that
    left their group (a Ray worker re-parented), found by a marker they inherited."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(name) == value and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_all(processes: Sequence[psutil.Process]) -> int:
    """SIGKILL each one still there; returns how many were."""
    killed = 0
    for process in processes:
        try:
            process.kill()
            killed += 1
        except psutil.NoSuchProcess:
            pass
    return killed


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`runyard stop`, the Jobs API, schedulers and `kill` end runyard with SIGTERM: within
    this block it acts as Ctrl-C does, so a driver's runs end KILLED instead
    of staying RUNNING and a server's group is stopped on the way out. Signals reach only the
    main thread; elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        # Whatever Ctrl-C does at this moment: inside a Tune run that is Tune's own handler,
        # which ends the run after writing its experiment state one last time (a resume
        # must find the checkpoints that state names; `keep` deletes older ones while the
        # run goes on). A second signal, or one outside Tune, raises KeyboardInterrupt.
        on_ctrl_c = signal.getsignal(signal.SIGINT)
        if not callable(on_ctrl_c):  # SIG_IGN or SIG_DFL
            raise KeyboardInterrupt
        on_ctrl_c(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ctrl_c_kept() -> Iterator[None]:
    """Whatever handles Ctrl-C now handles it again after the block. Ray Tune installs a
    handler of its own for each run and leaves it installed after the run: a later Ctrl-C or
    SIGTERM (`sigterm_as_interrupt` hands that to it) would go to a run that has ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    on_ctrl_c = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, on_ctrl_c)


def write_private(path: Path, text: str) -> Path:
    """Write a file only its owner can read (created 0600, never world-readable): tokens,
    passwords, configs that hold them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file (a server's, a node's), or "" when it cannot be read."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
