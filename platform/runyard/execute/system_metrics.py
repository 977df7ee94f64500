"""What a trial's process uses of its host, sampled where it runs: CPU, memory and, where
NVIDIA's management library answers, each visible GPU's utilization and memory.

A thread in the trial process takes a sample every `every_s` seconds and keeps it with its
own timestamp; the trainable hands the samples to Tune with each result, and the driver logs
them into the trial's run (names as MLflow's own system metrics, so its UI's System metrics
tab shows them). Trials never talk to MLflow themselves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)
PREFIX = "system/"
MB = 1e6  # MLflow's system metrics count megabytes as 10^6 bytes


@dataclass(frozen=True)
class SystemSample:
    """One sample; it crosses from the trial process to the driver with a Tune result."""

    timestamp_ms: int
    index: int  # 0, 1, ... within the trial process: the MLflow step of its metrics
    values: dict[str, float]  # metric name (system/...) -> value


class SystemSampler:
    """Samples this process every `every_s` seconds on a daemon thread until `stop()`."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call only starts the CPU-time clock
        self._gpus = _gpu_handles()
        self._samples: list[SystemSample] = []
        self._taken = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runyard-system-metrics",
                                        daemon=True)
        self._thread.start()

    def drain(self) -> list[SystemSample]:
        """The samples taken since the last call."""
        with self._lock:
            samples, self._samples = self._samples, []
        return samples

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self.every_s + 5)

    def _loop(self) -> None:
        while not self._stopped.wait(self.every_s):
            try:
                values = self._measure()
            except Exception as error:  # noqa: BLE001 — a failed sample never fails the trial
                log.warning("could not sample system metrics: %s", error)
                continue
            with self._lock:
                self._samples.append(SystemSample(int(time.time() * 1000), self._taken, values))
                self._taken += 1

    def _measure(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        values = {
            # this process: the trial (its rollout actors or data workers are processes of their own)
            "cpu_utilization_percentage": self._process.cpu_percent(),
            "process_memory_rss_megabytes": self._process.memory_info().rss / MB,
            # the host it shares with other trials, as MLflow's own monitor reports it
            "system_memory_usage_megabytes": memory.used / MB,
            "system_memory_usage_percentage": memory.percent,
        }
        if self._gpus:
            import pynvml  # imported by _gpu_handles already: a lookup, not a load
        for number, handle in self._gpus:
            utilization = pynvml.nvmlDeviceGetUtilizationRates(handle)
            gpu_memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu_{number}_utilization_percentage"] = float(utilization.gpu)
            values[f"gpu_{number}_memory_usage_megabytes"] = gpu_memory.used / MB
            values[f"gpu_{number}_memory_usage_percentage"] = 100.0 * gpu_memory.used / gpu_memory.total
        return {PREFIX + name: float(value) for name, value in values.items()}


def _gpu_handles() -> list[tuple[int, object]]:
    """(number as the trial sees it, NVML handle) of each GPU given to this process: those
    CUDA_VISIBLE_DEVICES names (Ray sets it per trial), else all; none without pynvml or a
    driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:  # noqa: BLE001 — no library, no driver or no GPU: CPU metrics only
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        devices = [str(i) for i in range(count)]
    else:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
    handles = []
    for number, device in enumerate(devices):
        try:
            handle = (pynvml.nvmlDeviceGetHandleByIndex(int(device)) if device.isdigit()
                      else pynvml.nvmlDeviceGetHandleByUUID(device))
        except Exception:  # noqa: BLE001 — a name NVML does not know: skip that one
            continue
        handles.append((number, handle))
    return handles
