"""The spec blocks a workload is set up with: `env:`, `rollout:`, `data:` and `resources:`.

Each block is closed (an unknown key is an error, so `val_frac: 0.5` cannot silently run
with the default 0.2) and documents its keys; `runyard workloads NAME` and the README's
field reference are generated from, or checked against, these descriptions. They live here,
not in runyard.spec, because workloads read them too; like the whole spec layer they import
only pydantic, so checking a spec never pays for torch or Ray.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvSpec(Block):
    """The gymnasium environment an RL workload trains in."""

    id: str = Field(description="a registered gymnasium env id, e.g. CartPole-v1 or ALE/Pong-v5")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to gymnasium.make")
    max_episode_steps: int | None = Field(
        None, ge=1, description="episodes are cut after this many steps (null: the env's own limit)")
    preprocess: Literal["pong"] | None = Field(
        None, description="observation preprocessing: pong = the Pong-from-pixels 80x80 "
                          "difference frames (the default for ALE/Pong ids)")

    @property
    def make_kwargs(self) -> dict[str, Any]:
        """gymnasium.make's keyword arguments: `kwargs`, and the episode limit when given."""
        limit = {} if self.max_episode_steps is None else {"max_episode_steps": self.max_episode_steps}
        return {**self.kwargs, **limit}

    @property
    def preprocessing(self) -> Literal["pong"] | None:
        """The preprocessing the env gets: `preprocess`, or its default for the id."""
        if self.preprocess is not None:
            return self.preprocess
        return "pong" if self.id.startswith("ALE/") and "Pong" in self.id else None


class RolloutSpec(Block):
    """Parallel sampling for RL workloads: `workers` samplers each stepping `envs_per_worker`
    envs."""

    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1, description="rollout workers (Ray actors in the trial's placement group), or auto: "
                        "as many as resources.cpus_per_trial holds; they share the trial's CPUs")
    envs_per_worker: int = Field(1, ge=1, description="vectorised envs stepped by each worker")
    backend: Literal["ray", "local", "processes"] = Field(
        "ray", description="ray: each worker is a Ray actor in the trial's placement group; "
                           "local: the workers step in the trial's own process; "
                           "processes: each worker is a process of its own started by the trial "
                           "(workers: auto is one per CPU of the trial)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs each Ray rollout actor reserves "
                                                        "(and emulator threads it runs)")


class DigitsData(Block):
    """scikit-learn's 8x8 handwritten digits, held in memory."""

    source: Literal["digits"] = Field("digits", description="the in-memory dataset (digits only)")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the images held out for "
                                                              "validation")
    split_seed: int = Field(0, ge=0, description="seed of the train/validation split (the same "
                                                 "for every trial of a sweep)")


class ShardsData(Block):
    """A dataset prepared by `runyard data prepare` (Parquet shards and a manifest)."""

    path: str = Field(min_length=1, description="the folder `runyard data prepare` wrote, or a "
                                                "URI of its copy in storage (s3://, gs://, "
                                                "file://), fetched to each node's disk once")
    resident: bool = Field(False, description="keep the whole split in (GPU) memory instead of "
                                              "streaming shards")
    shuffle_buffer: int = Field(65536, ge=1, description="images in the streaming shuffle buffer")
    val_batches: int | None = Field(None, ge=1, description="evaluate on only this many validation "
                                                            "batches per step (null: all)")


def _data_form(value: Any) -> str:
    # A block that names a path is a prepared dataset; anything else is read as digits, so
    # its errors are reported against the digits keys.
    if isinstance(value, ShardsData) or (isinstance(value, dict) and "path" in value):
        return "shards"
    return "digits"


DATA_FORMS: dict[str, type[Block]] = {"digits": DigitsData, "shards": ShardsData}

DataSpec = Annotated[
    Union[Annotated[DigitsData, Tag("digits")], Annotated[ShardsData, Tag("shards")]],
    Discriminator(_data_form),
]
"""The `data:` block of a supervised workload: digits or prepared shards."""


class ResourcesSpec(Block):
    """What one trial holds while it runs."""

    cpus_per_trial: float = Field(1, gt=0, description="CPUs of the trial's own process")
    gpus_per_trial: float = Field(0, ge=0, description="GPUs of the trial's own process (per "
                                                       "data-parallel worker)")
    memory_gb: float | None = Field(None, gt=0, description="memory reserved for the trial, GB")
    workers: int = Field(1, ge=1, description="data-parallel training workers per trial")
    custom: dict[str, float] = Field(default_factory=dict, description="custom Ray resources")

    @field_validator("custom")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if amount < 0:
                raise ValueError(f"custom resource {name!r} must be >= 0, found {amount}")
        return value


class EnvironmentSpec(Block):
    """The program's own Python packages and environment variables, beside runyard's.

    What a researcher's script pins for itself (a command workload's program); runyard's own
    environment is not changed."""

    requirements: str | None = Field(
        None, description="a pip requirements file, relative to the spec file; read when the "
                          "spec is loaded, its lines go before `pip` (options such as "
                          "--no-index --find-links DIR included)")
    pip: list[str] = Field(default_factory=list,
                           description="pip requirements, e.g. gymnasium==0.29.1")
    variables: dict[str, str] = Field(default_factory=dict,
                                      description="environment variables set for the program")

    @property
    def packages(self) -> bool:
        """Whether the program needs packages of its own (an environment to build)."""
        return bool(self.pip)


BLOCKS: dict[str, tuple[type[Block], ...]] = {
    "env": (EnvSpec,),
    "rollout": (RolloutSpec,),
    "data": (DigitsData, ShardsData),
    "resources": (ResourcesSpec,),
    "environment": (EnvironmentSpec,),
}
"""Every block, by its spec key, with the models it may take (data has two forms)."""


@functools.cache
def _data_adapter() -> TypeAdapter:
    return TypeAdapter(DataSpec)


def as_block(key: str, value: Any) -> Block | None:
    """The block under spec key `key` from plain data (a trial's payload, a test), validated
    as the spec's own is; a block or None is returned as it is."""
    if value is None or isinstance(value, Block):
        return value
    if key == "data":
        return _data_adapter().validate_python(value)
    [model] = BLOCKS[key]
    return model.model_validate(value)
