"""The objective over a trial's history (`sweep.scope`), with Ray Tune's names for it:

  last        the trial's last report of the metric (the default)
  all         its best report, in the metric's direction
  last-N-avg  the mean of its last N reports (N >= 1)

One rule, read in three places: the spec checks the name, the tracking side scores the trials
it reads back from MLflow, and the TPE searcher scores the trials it tells Optuna about. A
leaf module, so that all three can import it.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

_LAST_N_AVG = re.compile(r"last-(\d+)-avg")


@dataclass(frozen=True)
class Scope:
    name: str  # as the spec writes it: last, all, last-5-avg
    window: int | None = None  # last-N-avg: N

    @classmethod
    def parse(cls, text: str) -> Scope:
        """The scope `text` names; ValueError, saying what is allowed, for anything else."""
        if text in ("last", "all"):
            return cls(text)
        match = _LAST_N_AVG.fullmatch(str(text))
        if match and int(match.group(1)) >= 1:
            return cls(text, int(match.group(1)))
        raise ValueError(f"{text!r} is not a scope: write last (a trial's last report), all "
                         "(its best report) or last-N-avg with N >= 1 (the mean of its last N "
                         "reports), e.g. last-5-avg")

    @property
    def needs_history(self) -> bool:
        """Whether scoring needs more than the last value (MLflow keeps that on the run)."""
        return self.name != "last"

    def score(self, values: Sequence[float], mode: str) -> float:
        """A trial's score from its reports, oldest first (at least one). `all` passes over
        reports that are not numbers (NaN); a window holding one is NaN, as a last NaN is."""
        if self.name == "all":
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                return math.nan
            return max(finite) if mode == "max" else min(finite)
        if self.window is not None:
            return statistics.fmean(values[-self.window:])
        return values[-1]

    def kept(self, reports: dict[int, float], mode: str) -> dict[int, float]:
        """Of a running trial's reports (iteration -> value), those its score still needs:
        the last N for a window, the best one for `all`, the last one for `last`. Keyed by
        iteration, so that a trial which replays iterations from a checkpoint counts each once."""
        if self.name == "all":
            finite = {i: v for i, v in reports.items() if math.isfinite(v)}
            if not finite:
                return dict(reports)
            best = (max if mode == "max" else min)(finite, key=finite.__getitem__)
            return {best: finite[best]}
        recent = sorted(reports)[-(self.window or 1):]
        return {i: reports[i] for i in recent}

    def describe(self) -> str:
        """What a trial is scored by, for descriptions and table titles."""
        if self.name == "all":
            return "each trial's best reported value"
        if self.window is not None:
            return f"each trial's mean of its last {self.window} reported values"
        return "each trial's last reported value"


LAST = Scope("last")
