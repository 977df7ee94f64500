"""What a caller asks runyard to do, as typed requests, and the one place that turns a request
back into a `runyard` command line.

Some jobs run in another process: a submitted job's driver runs `runyard run` on the cluster,
and the queue starts each sweep as its own `runyard run` or `runyard resume`. Their command
lines are built here from the same request objects the CLI makes from its flags
(`runyard.cli.jobs.run_request`), and a test parses every built line back with the CLI's
parser, so a renamed flag fails a test instead of a queued sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ContinueAction = Literal["resume", "rerun-failed", "extend"]


@dataclass(frozen=True)
class RunRequest:
    """`runyard run SPEC`: start a job (a plain run or a sweep)."""

    spec: str  # the spec file, as the caller names it (relative paths: to the working dir)
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, in order
    job_id: str | None = None  # default: NAME-YYYYMMDD-HHMMSS
    address: str | None = None  # a Ray cluster's GCS address; None: RAY_ADDRESS, else embedded
    num_cpus: int | None = None  # CPUs of the embedded Ray
    tracking_uri: str | None = None
    cluster_config: str | None = None  # a launcher config whose node types count as capacity
    skip_preflight: bool = False
    storage: str | None = None  # where the job's state lives (default: RUNYARD_STORAGE, else .runyard/)

    def argv(self) -> list[str]:
        """The arguments after `runyard` that make the same request."""
        args = ["run", self.spec, *_sets(self.overrides)]
        args += _option("--id", self.job_id) + _option("--address", self.address)
        args += _option("--num-cpus", self.num_cpus) + _option("--tracking-uri", self.tracking_uri)
        args += _option("--cluster-config", self.cluster_config) + _option("--storage", self.storage)
        return args + (["--skip-preflight"] if self.skip_preflight else [])


@dataclass(frozen=True)
class ContinueRequest:
    """`runyard resume | rerun-failed | extend JOB`: go on with a job that has a ledger."""

    job: str  # job id, or the MLflow run id of the job's run
    action: ContinueAction = "resume"
    samples: int | None = None  # extend: configs to add
    address: str | None = None
    num_cpus: int | None = None
    storage: str | None = None
    cluster_config: str | None = None  # a launcher config whose node types count as capacity

    def argv(self) -> list[str]:
        args = [self.action, self.job]
        if self.action == "extend":
            args += _option("--samples", self.samples)
        args += _option("--address", self.address) + _option("--num-cpus", self.num_cpus)
        return args + _option("--storage", self.storage) + _option("--cluster-config", self.cluster_config)


def _sets(overrides: tuple[str, ...]) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def _option(flag: str, value: object) -> list[str]:
    return [] if value is None else [flag, str(value)]
