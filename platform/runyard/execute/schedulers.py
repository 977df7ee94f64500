"""Early stopping that judges a config by the mean over its seeds, not by one lucky seed.

With `sweep.seeds: k` every sampled config runs as k trials. Tune's ASHA and median-stopping
rules judge each trial on its own, so a bad config's lucky seed survives a rung while a good
config's unlucky seed is cut — the noise decides. `SeedMeanScheduler` wraps either rule and
feeds it one series per config instead:

  value(config, t) = mean over the config's seeds of the metric at iteration t

reported to the inner rule once every seed of the config that can still reach t has reached
it (a seed that ended or failed earlier drops out of the mean). Until then the seeds that are
ahead simply continue. When the inner rule stops a config, all its seeds stop: running ones
at their next result, paused ones (the median rule yields slots) at once.
"""

from __future__ import annotations

import statistics
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from runyard.execute.payload import TrialPayload


def sample_of(trial: Trial) -> int:
    return TrialPayload.of(trial.config).sample


class SeedMeanScheduler(FIFOScheduler):
    """Runs `inner` (an ASHAScheduler or MedianStoppingRule built with this metric and mode)
    on per-config seed means. `seeds` is how many trials each config has; `max_t` ends every
    trial at that iteration, as ASHA does."""

    def __init__(self, inner: TrialScheduler, seeds: int, metric: str, mode: str,
                 max_t: int | None = None, time_attr: str = "training_iteration"):
        super().__init__()
        self.inner = inner
        self.seeds = seeds
        self._metric, self._mode = metric, mode
        self.max_t = max_t
        self.time_attr = time_attr
        # Tune trial id -> {iteration: metric value}; and per sample, its trials by id.
        self.history: dict[str, dict[int, float]] = {}
        self.members: dict[int, dict[str, Trial]] = {}
        self.ended: set[str] = set()  # trials that ended (finished, failed or removed)
        self.judged: dict[int, int] = {}  # sample -> last iteration handed to the inner rule
        self.stopped: set[int] = set()  # samples the inner rule stopped
        self.representative: dict[int, Trial] = {}  # the trial standing for its config inside

    # ------------------------------------------------------------------- Tune's interface

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self.members.setdefault(sample_of(trial), {})[trial.trial_id] = trial
        self.history.setdefault(trial.trial_id, {})
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            # A resumed experiment re-adds its ended trials; their results are not replayed,
            # so they drop out of their config's means.
            self.ended.add(trial.trial_id)
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if self.time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        sample = sample_of(trial)
        if sample in self.stopped:
            return TrialScheduler.STOP
        iteration = int(result[self.time_attr])
        self.history[trial.trial_id][iteration] = float(result[self._metric])
        action = self._judge(tune_controller, sample, result)
        if sample in self.stopped:
            self._stop_waiting_seeds(tune_controller, sample, trial)
            return TrialScheduler.STOP
        if self.max_t is not None and iteration >= self.max_t:
            return TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._end(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._end(tune_controller, trial, {})

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._end(tune_controller, trial, {})

    def debug_string(self) -> str:
        return f"SeedMeanScheduler over {self.seeds} seeds: {self.inner.debug_string()}"

    # ---------------------------------------------------------------------------- logic

    def seed_mean(self, sample: int, iteration: int) -> float | None:
        """Mean of the metric at `iteration` over the config's seeds; None while a seed that
        can still reach it has not (seeds that ended before it drop out of the mean)."""
        members = self.members.get(sample, {})
        if len(members) < self.seeds:
            return None  # Tune has not created every seed's trial yet: they will reach it
        values = []
        for trial_id in members:
            value = self.history[trial_id].get(iteration)
            if value is not None:
                values.append(value)
            elif trial_id not in self.ended:
                return None
        return statistics.fmean(values) if values else None

    def _judge(self, tune_controller: Any, sample: int, result: dict) -> str:
        """Hand the inner rule every iteration of this config that is now complete, in order."""
        action = TrialScheduler.CONTINUE
        histories = [self.history[tid] for tid in self.members[sample] if self.history[tid]]
        reached = max((max(h) for h in histories), default=0)
        # Resumed seeds report from where their checkpoints were: the first iteration every
        # seed has a value for is where judging can start again.
        live = [self.history[tid] for tid in self.members[sample] if tid not in self.ended]
        common = max((min(h) for h in live if h), default=1)
        iteration = max(self.judged.get(sample, 0) + 1, common)
        while iteration <= reached:
            mean = self.seed_mean(sample, iteration)
            if mean is None:
                break
            self.judged[sample] = iteration
            representative = self.representative.setdefault(
                sample, min(self.members[sample].values(), key=lambda t: TrialPayload.of(t.config).index))
            decision = self.inner.on_trial_result(
                tune_controller, representative,
                {**result, self.time_attr: iteration, self._metric: mean})
            if decision == TrialScheduler.STOP and (self.max_t is None or iteration < self.max_t):
                self.stopped.add(sample)
                return TrialScheduler.STOP
            action = decision if decision == TrialScheduler.PAUSE else action
            iteration += 1
        return action

    def _end(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.ended.add(trial.trial_id)
        sample = sample_of(trial)
        if sample not in self.stopped and sample in self.members:
            # A seed that ended early may complete iterations its siblings were waiting on.
            self._judge(tune_controller, sample, result)
            if sample in self.stopped:
                self._stop_waiting_seeds(tune_controller, sample, trial)

    def _stop_waiting_seeds(self, tune_controller: Any, sample: int, current: Trial) -> None:
        """Seeds of a stopped config that are pending or paused end now; running ones end at
        their next result (stopping a running trial here would race with its result)."""
        if tune_controller is None:
            return
        for trial in self.members[sample].values():
            if trial is not current and trial.status in (Trial.PENDING, Trial.PAUSED):
                tune_controller.request_stop_trial(trial)
