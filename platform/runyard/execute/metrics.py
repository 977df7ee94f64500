"""runyard's live metrics, exported through Ray's metrics agent to Prometheus / Grafana.

The executor calls the record_* functions (from the driver or from a trial's actor); Ray's
per-node agent serves them on its metrics export port with the prefix `ray_`, next to Ray's own
node metrics (GPU utilization, memory, ...). dashboards/grafana/runyard-experiments.json plots
them; dashboards/prometheus.yml scrapes every node through Ray's service-discovery file.

    record_trial_states({"RUNNING": 4, "PENDING": 12, "TERMINATED": 3}, experiment="pong-pg")
    record_throughput(trial_id, experiment="pong-pg", env_steps_per_s=8400.0)
    record_progress(trial_id, experiment="pong-pg", env_steps=2048)
    record_tracking_backlog(37, experiment="pong-pg")

Without a connected Ray (a workload run standalone, a unit test) every function does nothing:
metrics are an observation aid and never a reason for a run to fail.

Exported names (Prometheus), all tagged with `experiment`:
    ray_runyard_trials{state}                      gauge: trials of the experiment in each state
    ray_runyard_env_steps_per_second{trial_id}     gauge: the trial's latest environment throughput
    ray_runyard_images_per_second{trial_id}        gauge: the trial's latest training throughput
    ray_runyard_env_steps_total{trial_id}          counter: environment steps taken
    ray_runyard_images_total{trial_id}             counter: training images consumed
    ray_runyard_tracking_backlog                   gauge: metric records queued, not yet in MLflow
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from ray import tune

from runyard.execute.payload import TrialPayload

# Ray Tune's trial states; each is set on every call so a state that empties drops to 0.
TRIAL_STATES = ("PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR")

# name -> (kind, description, tag keys). The single list dashboards are checked against.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "runyard_trials": ("gauge", "Trials of an experiment in each state.", ("experiment", "state")),
    "runyard_env_steps_per_second": ("gauge", "Environment steps per second of a trial.", ("experiment", "trial_id")),
    "runyard_images_per_second": ("gauge", "Training images per second of a trial.", ("experiment", "trial_id")),
    "runyard_env_steps": ("counter", "Environment steps taken by a trial.", ("experiment", "trial_id")),
    "runyard_images": ("counter", "Training images consumed by a trial.", ("experiment", "trial_id")),
    "runyard_tracking_backlog": ("gauge", "Metric records queued for MLflow, not yet written.", ("experiment",)),
}

_instances: dict = {}


def prometheus_names() -> set[str]:
    """The names Prometheus sees: Ray adds `ray_`, and `_total` to counters."""
    return {f"ray_{name}" + ("_total" if kind == "counter" else "") for name, (kind, _, _) in METRICS.items()}


def record_trial_states(counts: Mapping[str, int], experiment: str = "") -> None:
    """Set how many trials are in each state (states missing from counts are 0)."""
    gauge = _metric("runyard_trials")
    if gauge is None:
        return
    for state in sorted(set(TRIAL_STATES) | set(counts)):
        gauge.set(float(counts.get(state, 0)), tags={"experiment": experiment, "state": state})


def record_throughput(
    trial_id: str,
    *,
    experiment: str = "",
    env_steps_per_s: float | None = None,
    images_per_s: float | None = None,
) -> None:
    """The trial's latest throughput (whichever of the two it has)."""
    tags = {"experiment": experiment, "trial_id": trial_id}
    for name, value in (("runyard_env_steps_per_second", env_steps_per_s), ("runyard_images_per_second", images_per_s)):
        if value is not None and (gauge := _metric(name)) is not None:
            gauge.set(float(value), tags=tags)


def record_progress(trial_id: str, *, experiment: str = "", env_steps: int = 0, images: int = 0) -> None:
    """Add work done since the last call (Grafana takes rate() of these counters)."""
    tags = {"experiment": experiment, "trial_id": trial_id}
    for name, amount in (("runyard_env_steps", env_steps), ("runyard_images", images)):
        if amount > 0 and (counter := _metric(name)) is not None:
            counter.inc(float(amount), tags=tags)


def record_tracking_backlog(queued: int, experiment: str = "") -> None:
    """How many metric records wait in the tracker's queue (a growing line = MLflow too slow)."""
    gauge = _metric("runyard_tracking_backlog")
    if gauge is not None:
        gauge.set(float(queued), tags={"experiment": experiment})


def _metric(name: str):
    """The ray.util.metrics object for `name`, made on first use; None without a connected Ray."""
    import ray

    if not ray.is_initialized():
        return None
    if name not in _instances:
        from ray.util.metrics import Counter, Gauge

        kind, description, tag_keys = METRICS[name]
        cls = Counter if kind == "counter" else Gauge
        _instances[name] = cls(name, description=description, tag_keys=tag_keys)
    return _instances[name]



class MetricsCallback(tune.Callback):
    """Feeds the gauges above from the driver's view of the trials, at most once a second."""

    def __init__(self, experiment: str, backlog: Callable[[], int] | None):
        self.experiment = experiment
        self.backlog = backlog
        self.last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks; the backlog probe belongs to the driver that made it.
        return {**self.__dict__, "backlog": None}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        record_trial_states(counts, self.experiment)
        if self.backlog is not None:
            record_tracking_backlog(self.backlog(), self.experiment)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        record_throughput(TrialPayload.of(trial.config).trial_id, experiment=self.experiment,
                          env_steps_per_s=result.get("env_steps_per_s"),
                          images_per_s=result.get("images_per_s"))
