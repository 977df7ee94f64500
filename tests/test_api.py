"""The application layer: the CLI's flags and the API's requests are one contract (command
lines that other processes run are built from requests and parse back to the same request),
and a sweep run from Python returns what the CLI prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard import api
from runyard.api.queue import entry_command
from runyard.api.requests import ContinueRequest, RunRequest
from runyard.cli.jobs import continue_request, run_request
from runyard.cli.main import build_parser
from runyard.execute.queue import Entry
from runyard_testing import children_of, run_cli, tracking_uri

TOY_SWEEP = """\
name: toy-api
workload: toy.quadratic
stop: {iterations: 3}
sweep:
  samples: 3
  seeds: 2
  metric: score
  mode: max
  space:
    config.x: {uniform: [0.0, 1.0]}
"""


def parsed(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("request_", [
    RunRequest("jobs/a.yaml"),
    RunRequest("jobs/a b.yaml", ("config.lr=3e-4", "sweep.samples=2"), job_id="a-1",
               address="127.0.0.1:6379", num_cpus=2, tracking_uri="http://127.0.0.1:5000",
               cluster_config="cluster.yaml", skip_preflight=True),
], ids=["minimal", "every-flag"])
def test_a_run_request_survives_the_command_line(request_: RunRequest):
    assert run_request(parsed(request_.argv())) == request_


@pytest.mark.parametrize("request_", [
    ContinueRequest("job-1"),
    ContinueRequest("job-1", "rerun-failed", address="127.0.0.1:6379", num_cpus=1),
    ContinueRequest("job-1", "extend", samples=4, address="127.0.0.1:6379"),
    ContinueRequest("job-1", "resume", address="http://127.0.0.1:8265", storage="s3://b/p",
                    cluster_config="cluster.yaml"),
], ids=["resume", "rerun-failed", "extend", "every-flag"])
def test_a_continue_request_survives_the_command_line(request_: ContinueRequest):
    assert continue_request(parsed(request_.argv())) == request_


def test_queue_entries_become_the_commands_the_cli_parses():
    entry = Entry(1, "/p/jobs/a.yaml", ["seed=3"], 0, None, "a-q1", "queued", None, 0.0, None,
                  None, None)
    start = entry_command(entry, resuming=False, address="127.0.0.1:6379")
    assert run_request(parsed(_after_runyard(start))) == RunRequest(
        "/p/jobs/a.yaml", ("seed=3",), job_id="a-q1", address="127.0.0.1:6379")
    again = entry_command(entry, resuming=True, address="127.0.0.1:6379")
    assert continue_request(parsed(_after_runyard(again))) == ContinueRequest(
        "a-q1", "resume", address="127.0.0.1:6379")
    # `queue run --cluster-config` hands the node types on to every sweep it starts.
    autoscaled = entry_command(entry, resuming=False, address="127.0.0.1:6379",
                               cluster_config="/p/cluster.yaml")
    assert run_request(parsed(_after_runyard(autoscaled))).cluster_config == "/p/cluster.yaml"
    resumed = entry_command(entry, resuming=True, address="127.0.0.1:6379",
                            cluster_config="/p/cluster.yaml")
    assert continue_request(parsed(_after_runyard(resumed))).cluster_config == "/p/cluster.yaml"


def _after_runyard(command: list[str]) -> list[str]:
    """The arguments after the runyard executable (a script, or python -m ...)."""
    return command[3:] if command[1:3] == ["-m", "runyard.cli.main"] else command[1:]


def test_validate_returns_the_spec_and_its_trials(tmp_path: Path):
    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY_SWEEP)
    planned = api.validate(spec, ["sweep.samples=2"])
    assert planned.spec.name == "toy-api" and len(planned.trials) == 4  # 2 configs x 2 seeds


@pytest.mark.slow
def test_a_sweep_from_python_returns_its_best_config_as_the_cli_prints_it(workdir: Path):
    (workdir / "toy.yaml").write_text(TOY_SWEEP)
    outcome = api.run("toy.yaml", num_cpus=2, job_id="toy-python")
    assert outcome.status == "FINISHED" and outcome.exit_code == 0
    assert set(outcome.trial_run_ids) == {f"t{i:04d}" for i in range(6)}
    best = api.best_trial(outcome.job_id)
    assert best.trial_id == outcome.best.trial_id
    assert best.config["x"] == pytest.approx(float(best.summary.params["config.x"]))
    client = MlflowClient(tracking_uri(workdir))
    children = children_of(client, outcome.run_id)
    assert {run.info.run_id for run in children} == set(outcome.trial_run_ids.values())

    # The same sweep through the CLI draws the same configs and prints the same best one.
    cli = run_cli("run", "toy.yaml", "--num-cpus", "2", "--id", "toy-cli", cwd=workdir)
    assert cli.returncode == 0, cli.stderr
    top = outcome.best
    assert (f"best: score={top.value:.4g} ± {top.std:.3g} over 2 seeds  {top.label}  "
            f"({top.trial_id})") in cli.stdout.splitlines()
    assert "FINISHED  job toy-cli  (MLflow run " in cli.stdout


def test_every_name_the_api_lists_resolves():
    for name in api.__all__:
        assert getattr(api, name) is not None, name
