"""What runyard records so the MLflow UI reads well: experiments marked as model training,
and the sweep's Description (what was swept, the objective, the best config, the job id)."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from runyard.spec.schema import SweepSpec
from runyard.tracking.results import TrialResult, best_config, sweep_description
from runyard.tracking.store import EXPERIMENT_KIND, MODEL_TRAINING, JobTracking


def test_experiments_are_marked_model_training_new_or_made_before(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_experiment("older", artifact_location=(tmp_path / "a").as_uri())
    client.create_experiment("chosen", artifact_location=(tmp_path / "b").as_uri(),
                             tags={EXPERIMENT_KIND: "genai_development"})
    for name in ("fresh", "older", "chosen"):
        JobTracking(uri, name).close()
    kinds = {name: client.get_experiment_by_name(name).tags.get(EXPERIMENT_KIND)
             for name in ("fresh", "older", "chosen")}
    # A kind someone chose in the UI stays; runyard fills in only a missing one.
    assert kinds == {"fresh": MODEL_TRAINING, "older": MODEL_TRAINING, "chosen": "genai_development"}


def result(trial: int, sample: int, seed: int, value: float | None, status: str = "FINISHED"):
    return TrialResult(trial_id=f"t{trial:04d}", run_id=f"run{trial}", status=status, seed=seed,
                       sample=sample, label=f"lr={0.1 * (sample + 1):.3g},seed={seed}",
                       value=value, iterations=5, params={})


def test_the_sweep_description_says_what_was_swept_the_objective_and_the_best():
    sweep = SweepSpec(samples=2, seeds=2, metric="val_top1", mode="max",
                      space={"config.lr": {"loguniform": [1e-4, 1.0]},
                             "config.hidden": {"choice": [32, 64]}})
    results = [result(0, 0, 0, 0.80), result(1, 0, 1, 0.84),
               result(2, 1, 0, 0.90), result(3, 1, 1, None, status="FAILED")]
    text = sweep_description("digits-sweep-1", sweep, results, best_config(results, "max"))
    lines = text.split("\n\n")
    assert lines[0] == ("**Random search** over `config.lr` (loguniform [0.0001, 1]), "
                        "`config.hidden` (choice [32, 64]): 2 configs × 2 seeds, 4 trials "
                        "(3 finished, 1 failed).")
    assert lines[1].startswith("**Objective:** maximize `val_top1`, the mean over a config's seeds")
    # The best config is judged on what finished: lr=0.2 has one finished seed, at 0.90.
    assert lines[2] == "**Best:** `lr=0.2`: val_top1 = 0.9 (trial t0002, run run2)."
    assert "`digits-sweep-1`" in lines[3] and "runyard best digits-sweep-1" in lines[3]
    assert "none" in sweep_description("s", sweep, [result(0, 0, 0, None, "FAILED")], None)
