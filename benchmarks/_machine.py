"""One line describing the machine a benchmark ran on (its figures only compare within a run)."""

import os
import platform
import sys

# A command's prefix that starts it with Ctrl-C (SIGINT) at its default, as at a terminal: a
# benchmark run in the background (`nohup ... &`) passes SIGINT on ignored, and a driver it
# stops "with Ctrl-C" would not stop. (exec keeps the pid.)
CTRL_C_AS_AT_A_TERMINAL = [sys.executable, "-c", "import os, signal, sys; "
                           "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                           "os.execv(sys.argv[1], sys.argv[1:])"]


def describe() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
            f"Python {platform.python_version()}")


def timed_run_job(spec_path, spec_text: str, uri: str, workdir) -> float:
    """Seconds runyard's driver spends on the job in `spec_text` (written to `spec_path`),
    from its planned trials to the finished job, in the Ray session already open; its state
    goes to workdir/results."""
    import time
    from pathlib import Path

    from rich.console import Console

    from runyard.execute.job import run_job
    from runyard.execute.storage import Storage
    from runyard.plan import expand
    from runyard.spec import load_spec

    Path(spec_path).write_text(spec_text)
    spec = load_spec(spec_path)
    started = time.perf_counter()
    with open(os.devnull, "w") as sink:
        outcome = run_job(spec, expand(spec), uri, Path(workdir), Console(file=sink),
                          Storage(str(Path(workdir) / "results")))
    elapsed = time.perf_counter() - started
    assert outcome.status == "FINISHED", outcome
    return elapsed
