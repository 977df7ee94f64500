"""One line describing the machine a benchmark ran on (its figures only compare within a run)."""

import os
import platform


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
