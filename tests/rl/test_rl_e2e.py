"""RL jobs through `runyard run`: Pong from pixels on 2 Ray rollout actors, and an RLlib PPO
baseline, both tracked in MLflow under runyard's metric names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

JOBS = Path(__file__).resolve().parents[2] / "jobs"
RUNYARD = Path(sys.executable).with_name("runyard")
EPISODE_METRICS = ("episode_return_mean", "episode_len_mean", "env_steps_total",
                   "env_steps_per_s", "sample_time_s", "learn_time_s")


def run(tmp_path: Path, spec: str, *overrides: str) -> MlflowClient:
    args = [str(RUNYARD), "run", str(JOBS / spec), "--num-cpus", "4"]
    args += [item for o in overrides for item in ("--set", o)]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return MlflowClient(f"sqlite:///{tmp_path / '.runyard' / 'mlflow.db'}")


def the_run(client: MlflowClient, experiment: str):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    return run


def test_pong_from_pixels_on_two_rollout_actors(tmp_path: Path):
    client = run(tmp_path, "pong_pg.yaml", "stop.iterations=2", "rollout.backend=ray", "rollout.workers=2",
                 "rollout.envs_per_worker=1", "rollout.cpus_per_worker=1",
                 "config.batch_episodes=2", "env.max_episode_steps=400")
    pong = the_run(client, "pong-pg")
    for metric in EPISODE_METRICS:
        steps = [m.step for m in client.get_metric_history(pong.info.run_id, metric)]
        assert steps == [1, 2], metric
    artifacts = {a.path for a in client.list_artifacts(pong.info.run_id)}
    assert {"learning_curve.png", "first_layer_weights.png", "game.gif", "game.txt"} <= artifacts


def test_rllib_ppo_baseline_is_tracked_under_the_same_names(tmp_path: Path):
    client = run(tmp_path, "cartpole_ppo_rllib.yaml", "stop.iterations=1",
                 "config.training.train_batch_size_per_learner=500",
                 "config.training.minibatch_size=100", "config.training.num_epochs=1")
    ppo = the_run(client, "cartpole-ppo-rllib")
    for metric in EPISODE_METRICS:
        assert metric in ppo.data.metrics, metric
    assert ppo.data.metrics["env_steps_total"] >= 500
