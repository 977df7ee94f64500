"""The durable record of a job: what to resume, re-run or extend, after any crash.

One JSON file per job in the job's storage (execute/storage.py: `.runyard/sweeps/` of the
working dir by default, a shared path or a bucket on a cluster), written before the first
trial starts and after every change, whole or not at all (a driver killed mid-write leaves
the previous version). It holds the resolved spec, the tracking URI, the MLflow run the job
writes under, and each segment of Tune state (a sweep extended later gets a new segment
under the same parent). A SWEEP argument is a job id
(`digits-linear-sweep-20261123-030516`) or the MLflow run id of the job's run.

Beside it, once a sweep's driver ends, lie its FinalResults: every trial's score on the
sweep's own metric and scope, as read back from MLflow then. `runyard best` ranks a sweep from
them without MLflow, in the same time at 5,000 trials as at 5; the next driver of the job
(resume, rerun-failed, extend) removes them first, so they never describe a sweep that moved on.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from runyard.errors import UserError
from runyard.execute.storage import Storage
from runyard.fsio import delete_file, read_text, write_text
from runyard.spec import JobSpec
from runyard.tracking.results import TrialResult

_SAVING = threading.Lock()


@dataclass
class Segment:
    """One Tune experiment: trials [first_sample, first_sample + samples) of the spec."""

    tune_path: str  # a path or URI in the job's storage
    first_sample: int
    samples: int


@dataclass(frozen=True)
class FinalResults:
    """A sweep's trials as its last driver left them, scored on `metric` by `scope`."""

    metric: str
    scope: str  # as the spec writes it (runyard.scope.Scope.name)
    results: list[TrialResult]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FinalResults:
        data = json.loads(text)
        results = [TrialResult(**{**row, "history": None if row["history"] is None else
                                  tuple((step, value) for step, value in row["history"])})
                   for row in data["results"]]
        return cls(data["metric"], data["scope"], results)


@dataclass
class Ledger:
    sweep_id: str
    spec: dict[str, Any]
    tracking_uri: str
    experiment: str
    workdir: str  # where the driver that started it ran
    storage: str  # the storage root it lives in (Storage.root)
    spec_path: str = ""  # the file it was run from (promote writes specs extending it)
    run_id: str = ""  # the job's MLflow run: a plain job's run, or a sweep's parent
    segments: list[Segment] = field(default_factory=list)

    @property
    def path(self) -> str:
        return Storage(self.storage).ledger_path(self.sweep_id)

    @property
    def is_sweep(self) -> bool:
        return self.spec.get("sweep") is not None

    def trial_count(self, spec: JobSpec) -> int:
        """How many trials the job has in all (a TPE sweep's, proposed yet or not)."""
        if spec.sweep is None:
            return 1
        return sum(segment.samples for segment in self.segments) * spec.sweep.seeds

    def save(self) -> None:
        # The driver saves from two threads: its own, and the tracking writer's once the
        # job's run exists (execute/records.py); each save writes the whole ledger as it is.
        with _SAVING:
            write_text(self.path, json.dumps(asdict(self), indent=2))

    def save_final_results(self, final: FinalResults) -> None:
        write_text(Storage(self.storage).final_results_path(self.sweep_id), final.to_json())

    def final_results(self) -> FinalResults | None:
        """What the job's trials scored when its last driver ended (None while one runs, or
        for a job whose driver died before its end)."""
        path = Storage(self.storage).final_results_path(self.sweep_id)
        return FinalResults.from_json(read_text(path)) if Storage(self.storage).exists(path) else None

    def forget_final_results(self) -> None:
        """Before a driver goes on with the job: its trials are about to change."""
        delete_file(Storage(self.storage).final_results_path(self.sweep_id))

    @classmethod
    def load(cls, path: str) -> Ledger:
        data = json.loads(read_text(path))
        data["segments"] = [Segment(**s) for s in data["segments"]]
        return cls(**data)

    @classmethod
    def find(cls, storage: Storage, key: str) -> Ledger:
        """The job whose id or MLflow run id is `key`."""
        if storage.exists(storage.ledger_path(key)):
            return cls.load(storage.ledger_path(key))
        known = storage.ledger_ids()
        for job_id in known:
            ledger = cls.load(storage.ledger_path(job_id))
            if ledger.run_id == key:
                return ledger
        names = ", ".join(known[-5:]) or "none yet"
        raise UserError(f"no job {key!r} in {storage.join('sweeps')} (recent: {names}); give a "
                        "job id as printed by `runyard run`, or its MLflow run id (`runyard ls`)")
