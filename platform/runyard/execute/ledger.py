"""The durable record of a job: what to resume, re-run or extend, after any crash.

One JSON file per job under `.runyard/sweeps/`, written before the first trial starts and
after every change, atomically (a driver killed mid-write leaves the previous version). It
holds the resolved spec, the tracking URI, the MLflow run the job writes under, and each
segment of Tune state (a sweep extended later gets a new segment under the same parent).
A SWEEP argument is a job id (`digits-linear-sweep-20261123-030516`) or the MLflow run id
of the job's run.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runyard.errors import UserError


@dataclass
class Segment:
    """One Tune experiment: trials [first_sample, first_sample + samples) of the spec."""

    tune_path: str
    first_sample: int
    samples: int


@dataclass
class Ledger:
    sweep_id: str
    spec: dict[str, Any]
    tracking_uri: str
    experiment: str
    workdir: str
    spec_path: str = ""  # the file it was run from (promote writes specs extending it)
    run_id: str = ""  # the job's MLflow run: a plain job's run, or a sweep's parent
    segments: list[Segment] = field(default_factory=list)

    @staticmethod
    def folder(workdir: Path) -> Path:
        return Path(workdir) / ".runyard" / "sweeps"

    @property
    def path(self) -> Path:
        return self.folder(Path(self.workdir)) / f"{self.sweep_id}.json"

    @property
    def is_sweep(self) -> bool:
        return self.spec.get("sweep") is not None

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False,
                                         suffix=".tmp") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(handle.name, self.path)

    @classmethod
    def load(cls, path: Path) -> Ledger:
        data = json.loads(Path(path).read_text())
        data["segments"] = [Segment(**s) for s in data["segments"]]
        return cls(**data)

    @classmethod
    def find(cls, workdir: Path, key: str) -> Ledger:
        """The job whose id or MLflow run id is `key`."""
        folder = cls.folder(workdir)
        direct = folder / f"{key}.json"
        if direct.is_file():
            return cls.load(direct)
        known = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for path in known:
            ledger = cls.load(path)
            if ledger.run_id == key:
                return ledger
        names = ", ".join(p.stem for p in known[-5:]) or "none yet"
        raise UserError(f"no job {key!r} in {folder} (recent: {names}); give a job id as "
                        "printed by `runyard run`, or its MLflow run id (`runyard ls`)")
