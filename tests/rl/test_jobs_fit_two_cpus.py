"""Every shipped spec that needs no GPU and no prepared dataset runs, unchanged, for one
iteration through `runyard run` on a 2-CPU Ray: the machine the project is developed on.
Rollout actors and RLlib's env runners share the trial's CPUs, so none is refused.

The specs share one 2-CPU Ray that each `runyard run` joins with `--address`, as the sweeps of
`runyard queue run` join theirs (token auth, dashboard on): starting and stopping an embedded
Ray for every spec would cost the suite ~5 s a spec and check nothing more.

Only the amount of work per iteration is turned down (shorter episodes, smaller batches, one
sweep trial); resources, rollout layout and everything else stay as shipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard.spec import load_spec

pytestmark = pytest.mark.slow

JOBS = Path(__file__).resolve().parents[2] / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")

# Less work per iteration, nothing about where it runs.
LIGHTER = {
    "pong_pg.yaml": ["config.batch_episodes=2", "env.max_episode_steps=300"],
    "pong_pg_sweep.yaml": ["config.batch_episodes=2", "env.max_episode_steps=300"],
    "pong_pg_learners.yaml": ["config.batch_episodes=2", "env.max_episode_steps=300"],
    "pong_trpo.yaml": ["config.steps_per_iter=1000", "config.value_iters=2"],
    "hopper_trpo.yaml": ["config.steps_per_iter=1000", "config.value_iters=2"],
    "cartpole_trpo.yaml": ["config.steps_per_iter=1000", "config.value_iters=2"],
    "cartpole_ppo_rllib.yaml": ["config.training.train_batch_size_per_learner=500",
                                "config.training.minibatch_size=100", "config.training.num_epochs=1"],
}


# A process that holds a 2-CPU Ray (token auth on, like `runyard queue run`'s) and prints its
# address, until its stdin closes.
HOLD_RAY = """
import sys
from runyard.launch.ray_session import shared_local_ray
with shared_local_ray(sys.argv[1], num_cpus=2) as session:
    print(session.address, flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def two_cpu_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The shared Ray's address, and the environment that lets a driver join it."""
    state = tmp_path_factory.mktemp("two-cpu-ray")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RAY, str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        address = holder.stdout.readline().strip()
        assert address, "the shared 2-CPU Ray did not start"
        yield address, {**env, "RAY_AUTH_MODE": "token",
                        "RAY_AUTH_TOKEN_PATH": str(state / "ray_auth_token")}
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(timeout=30)


def runnable_here() -> list[str]:
    names = []
    for path in sorted(JOBS.glob("*.yaml")):
        spec = load_spec(path)
        if spec.resources.gpus_per_trial or getattr(spec.data, "path", None):
            continue
        names.append(path.name)
    return names


@pytest.mark.parametrize("filename", runnable_here())
def test_shipped_spec_runs_one_iteration_on_two_cpus(filename, tmp_path, two_cpu_ray):
    address, env = two_cpu_ray
    overrides = ["stop.iterations=1"] + LIGHTER.get(filename, [])
    sweep = load_spec(JOBS / filename).sweep
    if sweep is not None:  # one trial: one sample, one seed, the first point of each grid
        space = {key: {"grid": dist.grid[:1]} if dist.kind == "grid" else dist.model_dump(exclude_none=True)
                 for key, dist in sweep.space.items()}
        overrides += ["sweep.samples=1", "sweep.seeds=1", f"sweep.space={json.dumps(space)}"]
    # From a copy of the project, as a researcher runs a spec: relative paths in a spec (the
    # command workload's script) are the project's.
    shutil.copytree(JOBS, tmp_path / "jobs")
    args = [str(RUNYARD), "run", f"jobs/{filename}", "--address", address]
    args += [item for o in overrides for item in ("--set", o)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FINISHED" in result.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / '.runyard' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(run.info.status == "FINISHED" for run in runs)


def test_the_selection_covers_rl_cem_and_rllib():
    names = runnable_here()
    assert {"pong_pg.yaml", "cartpole_cem.yaml", "cartpole_ppo_rllib.yaml", "digits_linear.yaml"} <= set(names)
    assert "imagenet64_linear.yaml" not in names and "synth_convnet.yaml" not in names
