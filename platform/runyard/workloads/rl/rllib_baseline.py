"""rllib.<ALGO> — RLlib's own algorithms (PPO, IMPALA, DQN, APPO, SAC ...) as runyard baselines,
run and tracked like rl.pg / rl.trpo / rl.cem so their curves sit side by side.

`runyard.workloads.get("rllib.PPO")` returns a workload class bound to PPO. Its config is
free-form: each key names an AlgorithmConfig method of the new API stack and its value is
that method's keyword arguments, e.g.

    config: {training: {lr: 3.0e-4}, env_runners: {num_env_runners: 1}}

The spec's env block becomes `environment(env=id, env_config=kwargs)`, the trial seed
`debugging(seed=...)`. One step is `algo.train()`; checkpoints are the algorithm's own
(`save_to_path` / `restore_from_path`). Only ray.rllib is imported here (RLlib itself uses
Tune internally; this module does not).
"""

from __future__ import annotations

import functools
import inspect
import time
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch
from pydantic import ConfigDict

from runyard.workloads.base import Direction, Workload, WorkloadConfig, WorkloadContext
from runyard.workloads.rl.rollout import env_spaces
from runyard.workloads.rl.workload import EPISODE_METRICS, check_env_id

# Algorithms whose RLlib implementation only handles discrete actions (Q-learning over a finite set).
DISCRETE_ACTIONS_ONLY = {"DQN"}

# The AlgorithmConfig methods a spec may call, in the order they are applied.
SECTIONS = (
    "environment", "env_runners", "learners", "training", "rl_module", "evaluation",
    "reporting", "debugging", "fault_tolerance", "resources",
)


class RLlibConfig(WorkloadConfig):
    """{section: {argument: value}} for the AlgorithmConfig methods in SECTIONS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    environment: dict[str, Any] = {}
    env_runners: dict[str, Any] = {}
    learners: dict[str, Any] = {}
    training: dict[str, Any] = {}
    rl_module: dict[str, Any] = {}
    evaluation: dict[str, Any] = {}
    reporting: dict[str, Any] = {}
    debugging: dict[str, Any] = {}
    fault_tolerance: dict[str, Any] = {}
    resources: dict[str, Any] = {}


def algorithm_names() -> list[str]:
    from ray.rllib.algorithms.registry import ALGORITHMS

    return sorted(ALGORITHMS)


def default_config(algorithm: str):
    """RLlib's default AlgorithmConfig object for `algorithm`."""
    from ray.rllib.algorithms.registry import ALGORITHMS

    algo_class, config = ALGORITHMS[algorithm]()
    return config if not isinstance(config, dict) else algo_class.get_default_config()


def accepted_arguments(config_class: type, method_name: str) -> set[str]:
    """Keyword arguments `config_class.method_name` takes, following **kwargs up the MRO
    (PPOConfig.training passes lr, gamma ... on to AlgorithmConfig.training)."""
    names: set[str] = set()
    for klass in config_class.__mro__:
        if method_name not in klass.__dict__:
            continue
        params = inspect.signature(klass.__dict__[method_name]).parameters.values()
        names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


class RLlibBaseline(Workload):
    """Base of the classes `workload_for` makes; `algorithm` names the RLlib algorithm."""

    algorithm: ClassVar[str] = ""
    Config = RLlibConfig
    metrics: ClassVar[dict[str, Direction]] = EPISODE_METRICS
    blocks = ("env",)

    @classmethod
    def check_spec(cls, config: RLlibConfig, context: WorkloadContext) -> list[str]:
        problems = check_env_id(context.env)
        if not problems and cls.algorithm in DISCRETE_ACTIONS_ONLY:
            _, action_space = env_spaces(context.env)
            if not isinstance(action_space, gym.spaces.Discrete):
                problems.append(
                    f"env.id: rllib.{cls.algorithm} does not support {context.env.id}'s action space "
                    f"{action_space}; it supports Discrete action spaces (for continuous ones use rllib.SAC or rllib.PPO)"
                )
        algo_config = default_config(cls.algorithm)
        for section in SECTIONS:
            accepted = accepted_arguments(type(algo_config), section)
            for key in getattr(config, section):
                if key not in accepted:
                    problems.append(
                        f"config.{section}.{key}: {type(algo_config).__name__}.{section}() has no argument "
                        f"{key!r}; it takes {', '.join(sorted(accepted))}"
                    )
        if "env" in config.environment:
            problems.append("config.environment.env: set the env in the spec's env block (env.id), not here")
        return problems

    @classmethod
    def algorithm_config(cls, config: RLlibConfig) -> Any:
        """RLlib's AlgorithmConfig with the spec's sections applied."""
        algo_config = default_config(cls.algorithm)
        for section in SECTIONS:
            kwargs = getattr(config, section)
            if kwargs:
                algo_config = getattr(algo_config, section)(**kwargs)
        return algo_config

    @classmethod
    def helper_bundles(cls, config: RLlibConfig) -> list[dict[str, float]]:
        # Inside a trial's placement group RLlib puts its env runners (and remote learners)
        # in the bundles after the first, as its own resource request lays them out.
        from ray.rllib.algorithms.registry import ALGORITHMS

        algo_class, _ = ALGORITHMS[cls.algorithm]()
        request = algo_class.default_resource_request(cls.algorithm_config(config))
        return [dict(bundle) for bundle in request.bundles[1:]]

    def setup(self, config: RLlibConfig, context: WorkloadContext) -> None:
        import ray

        # The local learner gets the trial's CPUs that its env runner actors do not use.
        runners = int(config.env_runners.get("num_env_runners", 0) or 0)
        cpus = int(context.resources.cpus_per_trial)
        torch.set_num_threads(max(1, cpus - runners))
        # RLlib starts Ray on its own if none is running, with a dashboard; standalone, start a
        # private one without it, and stop it again in close().
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(num_cpus=1 + runners, include_dashboard=False, log_to_driver=False)
        algo_config = self.algorithm_config(config).environment(env=context.env.id,
                                                                env_config=context.env.make_kwargs)
        self.algo = algo_config.debugging(seed=context.seed).build_algo()
        self.env_steps_total = 0

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        result = self.algo.train()
        elapsed = time.perf_counter() - start
        runners = result.get("env_runners", {})
        steps = int(result.get("num_env_steps_sampled_lifetime", runners.get("num_env_steps_sampled_lifetime", 0)))
        metrics = {
            "env_steps_total": float(steps),
            "env_steps_per_s": (steps - self.env_steps_total) / elapsed,
        }
        self.env_steps_total = steps
        for name in ("episode_return_mean", "episode_return_min", "episode_return_max", "episode_len_mean"):
            if name in runners:
                metrics[name] = float(runners[name])
        timers = result.get("timers", {})
        if "env_runner_sampling_timer" in timers:
            metrics["sample_time_s"] = float(timers["env_runner_sampling_timer"])
        if "learner_update_timer" in timers:
            metrics["learn_time_s"] = float(timers["learner_update_timer"])
        entropy = result.get("learners", {}).get("default_policy", {}).get("entropy")
        if entropy is not None:
            metrics["entropy"] = float(entropy)
        return metrics

    def save(self, directory: Path) -> None:
        self.algo.save_to_path(str(Path(directory).absolute() / "rllib"))
        (Path(directory) / "env_steps_total").write_text(str(self.env_steps_total))

    def restore(self, directory: Path) -> None:
        self.algo.restore_from_path(str(Path(directory).absolute() / "rllib"))
        self.env_steps_total = int((Path(directory) / "env_steps_total").read_text())

    def close(self) -> None:
        import ray

        algo = getattr(self, "algo", None)
        if algo is not None:
            algo.stop()
        if getattr(self, "_owns_ray", False):
            ray.shutdown()


@functools.cache
def workload_for(algorithm: str) -> type[RLlibBaseline]:
    """The workload class for `rllib.<algorithm>`; KeyError naming the known ones otherwise."""
    names = algorithm_names()
    if algorithm not in names:
        raise KeyError(f"rllib.{algorithm}: RLlib has no algorithm {algorithm!r}; known: {', '.join(names)}")
    return type(f"RLlib{algorithm}", (RLlibBaseline,), {"algorithm": algorithm, "__module__": __name__})
