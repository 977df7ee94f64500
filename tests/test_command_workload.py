"""The command workload: a plain script, which knows runyard only by its environment
variables, swept through the real CLI on a real embedded Ray and MLflow store; its line
parser and its process handling on their own, without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import children_of, ledger_of, run_cli, tracking_uri
from runyard.workloads.base import WorkloadContext, WorkloadFinished
from runyard.workloads.command import Command, CommandConfig
from runyard.workloads.command_reports import Report, parse_report

# Counts epochs; score = rate * epoch. Checkpoints after every epoch, reports in JSON on odd
# epochs and key=value on even ones, chatters on stdout, and can crash at one epoch: always
# while a marker file exists, or once (it leaves a marker so the retry gets past).
SCRIPT = """\
import argparse, json, os, sys, time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--rate", type=float, required=True)
parser.add_argument("--epochs", type=int, required=True)
parser.add_argument("--sleep", type=float, default=0.05)
parser.add_argument("--crash-at", type=int, default=3)
parser.add_argument("--crash", choices=["never", "once", "while-broken"], default="never")
parser.add_argument("--named", action="store_true", help="each checkpoint in its own folder")
args = parser.parse_args()

checkpoints = Path(os.environ["RUNYARD_CHECKPOINT_DIR"])
Path(f"pid-{args.crash}-{args.rate}").write_text(str(os.getpid()))
start = 0
if os.environ.get("RUNYARD_RESTORE_DIR"):
    start = json.loads((Path(os.environ["RUNYARD_RESTORE_DIR"]) / "state.json").read_text())["epoch"]
    print(f"resumed from epoch {start}")
for epoch in range(start + 1, args.epochs + 1):
    time.sleep(args.sleep)
    marker = Path(f"crashed-{args.crash}-{args.rate}")
    if epoch == args.crash_at and (
            (args.crash == "once" and not marker.exists())
            or (args.crash == "while-broken" and Path("broken").exists())):
        marker.touch()
        print("loss went to nan", file=sys.stderr)
        raise ValueError(f"planted crash at epoch {epoch}")
    folder = checkpoints / f"epoch-{epoch}" if args.named else checkpoints
    folder.mkdir(exist_ok=True)
    (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
    score, mark = args.rate * epoch, folder.name if args.named else "true"
    if epoch % 2:
        print(json.dumps({"epoch": epoch, "score": score, "checkpoint": mark == "true" or mark}))
    else:
        print(f"epoch={epoch} score={score} checkpoint={mark}")
    print("just some chatter", flush=True)
"""

SPEC = """\
name: {name}
workload: command
config:
  command: python counter.py --rate {{params.rate}} --epochs {{params.epochs}} --crash {{params.crash}} --named
  params: {{rate: 0.1, epochs: {epochs}, crash: never}}
  metrics: {{score: max, epoch: max}}
stop: {stop}
checkpoint: {{every: 1, keep: 2}}
tracking: {{experiment: command}}
sweep:
  samples: 1
  metric: score
  max_failures: {max_failures}
  max_concurrent: 2
  space:
{space}
"""


def write_job(workdir: Path, name: str, space: dict[str, list], epochs: int = 5,
              stop: str = "{iterations: 20}", max_failures: int = 0) -> Path:
    """The script and a sweep of it: `space` maps a key of config.params (or "", the whole
    of config.params) to its grid."""
    (workdir / "counter.py").write_text(SCRIPT)
    lines = "\n".join(f"    {'.'.join(['config.params', key]).rstrip('.')}: "
                      f"{{grid: {json.dumps(values)}}}" for key, values in space.items())
    path = workdir / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, epochs=epochs, stop=stop, max_failures=max_failures,
                                space=lines))
    return path


def trial_runs(workdir: Path, job: str) -> dict[str, object]:
    """The job's trial runs, by the rate their script ran with."""
    client = MlflowClient(tracking_uri(workdir))
    children = children_of(client, ledger_of(workdir, job).run_id)
    return {float(run.data.params["config.params.rate"]): run for run in children}


def history(workdir: Path, run, metric: str = "score") -> list[tuple[int, float]]:
    client = MlflowClient(tracking_uri(workdir))
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))


def gone(pid: int) -> bool:
    """Whether a process has ended (an orphan that ended may be a zombie for a moment,
    until init reaps it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def artifact_text(workdir: Path, run, name: str) -> str:
    client = MlflowClient(tracking_uri(workdir))
    return Path(client.download_artifacts(run.info.run_id, name, str(workdir))).read_text()


# ----------------------------------------------------------------------------- the parser


def test_a_json_object_line_is_a_report_of_its_numbers():
    assert parse_report('{"epoch": 3, "loss": 0.25, "phase": "train"}\n') == \
        Report({"epoch": 3.0, "loss": 0.25})
    assert parse_report('{"checkpoint": true}') == Report({}, checkpoint=True)
    assert parse_report('{"loss": 1, "checkpoint": true}') == Report({"loss": 1.0}, True)
    assert parse_report('{"checkpoint": "step-300"}') == Report({}, checkpoint="step-300")
    assert parse_report('{"ok": true}') is None  # a bool is not a number


def test_key_value_pairs_are_a_report_only_when_every_word_is_one():
    assert parse_report("epoch=3 loss=0.25, acc=9e-1") == \
        Report({"epoch": 3.0, "loss": 0.25, "acc": 0.9})
    assert parse_report("val/loss=2 checkpoint=true") == Report({"val/loss": 2.0}, True)
    assert parse_report("lr=0.1 training starts") is None
    assert parse_report("loss=low") is None
    assert parse_report("loss=[1., 2.]") is None  # a list of several numbers is no number
    assert parse_report("checkpoint=step-300") == Report({}, "step-300")
    assert parse_report("checkpoint=false") is None


def test_values_printed_as_python_prints_one_number_are_read_as_that_number():
    # What a script copied from the web prints, unchanged (CleanRL's PPO: an array of one).
    assert parse_report("global_step=60, episodic_return=[15.]") == \
        Report({"global_step": 60.0, "episodic_return": 15.0})
    assert parse_report("loss=tensor(0.5, grad_fn=<MeanBackward0>); "
                        "ret=array([15.], dtype=float32); lr=np.float64(3e-4)") == \
        Report({"loss": 0.5, "ret": 15.0, "lr": 3e-4})
    assert parse_report('{"episodic_return": [15.0], "step": 3}') == \
        Report({"episodic_return": 15.0, "step": 3.0})


@pytest.mark.parametrize("line", ["", "Epoch 3/10", "{not json", "[1, 2]", '"loss=1"',
                                  '{"phase": "train"}', "=3", "3=3"])
def test_anything_else_is_plain_output(line: str):
    assert parse_report(line) is None


# ------------------------------------------------------------- the workload, without Ray


def command_workload(tmp_path: Path, **config) -> Command:
    (tmp_path / "counter.py").write_text(SCRIPT)
    workload = Command()
    workload.setup(CommandConfig(**{"metrics": {"score": "max"}, **config}),
                   WorkloadContext(seed=7, workdir=tmp_path))
    return workload


@pytest.mark.parametrize("options", [["--named"], ["--sleep", "0.2"]], ids=["named", "whole-dir"])
def test_a_restored_program_continues_from_its_checkpoint_and_skips_what_was_tracked(
        tmp_path: Path, options: list[str]):
    # A named checkpoint is exact however fast the program runs on; the whole directory is
    # exact when the next checkpoint comes some time after the report (an epoch's work).
    command = [sys.executable, "counter.py", "--rate", "1", "--epochs", "4", *options]
    first = command_workload(tmp_path, command=command)
    assert [first.step().metrics["score"] for _ in range(3)] == [1.0, 2.0, 3.0]
    saved = tmp_path / "saved"
    saved.mkdir()
    first.save(saved)
    first.close()
    assert json.loads((saved / "checkpoint" / "state.json").read_text()) == {"epoch": 3}

    second = command_workload(tmp_path, command=command)
    second.restore(saved)
    assert second.step().metrics == {"score": 4.0}
    with pytest.raises(WorkloadFinished):
        second.step()
    logs = tmp_path / "logs"
    logs.mkdir()
    second.artifacts(logs)
    second.close()
    assert "resumed from epoch 3" in (logs / "stdout.log").read_text()


def test_reports_on_a_file_descriptor_leave_stdout_to_the_program(tmp_path: Path):
    script = tmp_path / "fd.py"
    script.write_text(textwrap.dedent("""\
        import os
        print('{"score": 99}')  # stdout: only logged
        with os.fdopen(int(os.environ["RUNYARD_METRICS_FD"]), "w") as reports:
            print("score=1.5", file=reports)
        """))
    workload = command_workload(tmp_path, command=[sys.executable, str(script)], reports="fd")
    assert workload.step().metrics == {"score": 1.5}
    with pytest.raises(WorkloadFinished):
        workload.step()
    workload.close()


def test_a_crash_is_an_error_ending_with_the_last_line_of_stderr(tmp_path: Path):
    workload = command_workload(tmp_path, command="python counter.py --rate 1 --epochs 5 "
                                "--crash-at 2 --crash once")
    assert workload.step().metrics == {"score": 1.0}
    with pytest.raises(RuntimeError) as error:
        workload.step()
    workload.close()
    message = str(error.value)
    assert "loss went to nan" in message
    assert message.splitlines()[-1] == ("python counter.py exited with code 1: "
                                        "ValueError: planted crash at epoch 2")


def test_close_terminates_the_program_and_its_children(tmp_path: Path):
    script = tmp_path / "spawner.py"
    script.write_text(textwrap.dedent("""\
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"score=1 child={child.pid}", flush=True)
        time.sleep(600)
        """))
    workload = Command()
    workload.setup(CommandConfig(command=[sys.executable, str(script)],
                                 metrics={"score": "max", "child": "max"}),
                   WorkloadContext(workdir=tmp_path))
    child = int(workload.step().metrics["child"])
    parent = workload.process.pid
    workload.close()
    assert gone(parent) and gone(child)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_trial_process_killed_outright_takes_its_program_with_it(tmp_path: Path):
    # The trial process: a Command started in its main thread, as in a Ray worker; the
    # program reports its pid and sleeps. SIGKILL gives the trial no chance to stop it.
    (tmp_path / "trial.py").write_text(textwrap.dedent(f"""\
        import sys, time
        from pathlib import Path
        from runyard.workloads.base import WorkloadContext
        from runyard.workloads.command import Command, CommandConfig
        program = "import os, time; print('score=1 pid=%d' % os.getpid(), flush=True); time.sleep(600)"
        workload = Command()
        workload.setup(CommandConfig(command=[sys.executable, "-c", program],
                                     metrics={{"score": "max", "pid": "max"}}),
                       WorkloadContext(workdir=Path({str(tmp_path)!r})))
        print(int(workload.step().metrics["pid"]), flush=True)
        time.sleep(600)
        """))
    trial = subprocess.Popen([sys.executable, str(tmp_path / "trial.py")], stdout=subprocess.PIPE,
                             text=True)
    try:
        program = int(trial.stdout.readline())
        assert not gone(program)
    finally:
        trial.kill()
        trial.wait()
    deadline = time.monotonic() + 10
    while not gone(program) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(program)


def test_a_program_that_cannot_start_is_a_failed_trial_saying_why(tmp_path: Path):
    workload = Command()
    workload.setup(CommandConfig(command=["no-such-program-here", "--lr", "1"], metrics={"score": "max"}),
                   WorkloadContext(workdir=tmp_path))
    with pytest.raises(RuntimeError, match="no-such-program-here"):
        workload.step()
    workload.close()


def test_bad_commands_are_refused_by_validate_naming_the_field(workdir: Path):
    spec = write_job(workdir, "typo", {"rate": [0.1]})
    spec.write_text(spec.read_text().replace("{params.epochs}", "{params.epoch}")
                    .replace("metric: score", "metric: acc"))
    result = run_cli("validate", str(spec), cwd=workdir)
    assert result.returncode == 2
    assert "config.command" in result.stderr and "did you mean {params.epochs}" in result.stderr
    assert "sweep.metric" in result.stderr and "'acc'" in result.stderr


# ---------------------------------------------------------------- through `runyard run`


@pytest.mark.slow
def test_a_sweep_of_a_plain_script_stops_retries_fails_and_reruns_like_any_other(workdir: Path):
    broken = workdir / "broken"
    broken.touch()
    spec = write_job(workdir, "script", {"": [
        {"rate": 0.1, "epochs": 50, "crash": "never"},   # runs into the iteration limit
        {"rate": 0.6, "epochs": 50, "crash": "never"},   # passes the score threshold at epoch 2
        {"rate": 0.15, "epochs": 5, "crash": "once"},    # crashes once; the retry resumes
        {"rate": 0.19, "epochs": 5, "crash": "while-broken"},  # crashes until fixed
    ]}, stop="{iterations: 6, score: 1.0}", max_failures=1)
    result = run_cli("run", str(spec), "--id", "script", cwd=workdir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rerun-failed script" in result.stdout

    runs = trial_runs(workdir, "script")
    assert {rate: run.info.status for rate, run in runs.items()} == {
        0.1: "FINISHED", 0.6: "FINISHED", 0.15: "FINISHED", 0.19: "FAILED"}
    # Every iteration's metrics, at its step; the stop conditions end the first two early.
    assert history(workdir, runs[0.1]) == [(n, pytest.approx(0.1 * n)) for n in range(1, 7)]
    assert history(workdir, runs[0.1], "epoch") == [(n, n) for n in range(1, 7)]
    assert history(workdir, runs[0.6]) == [(1, 0.6), (2, 1.2)]
    assert "just some chatter" in artifact_text(workdir, runs[0.1], "stdout.log")
    # Stopped long before their 50 epochs, the programs were terminated, not left running.
    assert all(gone(int((workdir / f"pid-never-{rate}").read_text())) for rate in (0.1, 0.6))

    # Crashed in epoch 3, resumed from the checkpoint of epoch 2: every epoch tracked once,
    # and the program's own end (5 epochs) ended the trial.
    retried = runs[0.15]
    assert [step for step, _ in history(workdir, retried)] == [1, 2, 3, 4, 5]
    assert "resumed from epoch 2" in artifact_text(workdir, retried, "stdout.log")
    assert retried.data.metrics["training_iteration"] == 5

    failed = runs[0.19]
    assert failed.data.tags["runyard.error"].endswith(
        "python counter.py exited with code 1: ValueError: planted crash at epoch 3")
    assert "loss went to nan" in artifact_text(workdir, failed, "error.txt")
    # A failed trial keeps its program's logs, and the terminal shows the cause in a few
    # lines, without Ray's traceback.
    assert "loss went to nan" in artifact_text(workdir, failed, "stderr.log")
    assert "resumed from epoch 2" in artifact_text(workdir, failed, "stdout.log")  # its last try
    assert "python counter.py exited with code 1: ValueError: planted crash" in result.stdout
    assert result.stdout.count("exited with code 1: ValueError: planted crash") == 1  # said once
    assert "ray.exceptions" not in result.stdout + result.stderr
    assert "tune_controller" not in result.stdout + result.stderr

    broken.unlink()
    rerun = run_cli("rerun-failed", "script", cwd=workdir)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    fixed = trial_runs(workdir, "script")[0.19]
    assert fixed.info.run_id == failed.info.run_id and fixed.info.status == "FINISHED"
    assert [step for step, _ in history(workdir, fixed)] == [1, 2, 3, 4, 5]


# ------------------------------------------- reports where an unchanged script writes them

def test_a_named_step_is_the_iterations_step_and_other_numbers_ride_along(tmp_path: Path):
    script = tmp_path / "episodes.py"
    script.write_text(textwrap.dedent("""\
        print("global_step=60, episodic_return=[15.]")
        print("global_step=64, losses/value_loss=0.5")   # no metric: recorded at its step
        print("global_step=90, episodic_return=[21.], episodic_length=[21]")
        """))
    workload = command_workload(tmp_path, command=[sys.executable, str(script)],
                                step="global_step", metrics={"episodic_return": "max"})
    first, second = workload.step(), workload.step()
    assert (first.metrics, first.step) == ({"episodic_return": 15.0}, 60)
    assert (second.metrics, second.step) == ({"episodic_return": 21.0}, 90)
    assert second.points == ((64, {"global_step": 64.0, "losses/value_loss": 0.5}),
                             (90, {"global_step": 90.0, "episodic_length": 21.0}))
    with pytest.raises(WorkloadFinished):
        workload.step()
    workload.close()


def test_lines_that_look_like_reports_and_are_not_are_named_in_the_failure(tmp_path: Path):
    script = tmp_path / "near.py"
    script.write_text('print("Epoch 1: score=0.5")\nprint("Epoch 2: score=0.7")\n')
    workload = command_workload(tmp_path, command=[sys.executable, str(script)])
    with pytest.raises(RuntimeError) as error:
        workload.step()
    workload.close()
    assert "2 line(s) looked like reports" in str(error.value)
    assert "'Epoch 1: score=0.5'" in str(error.value)


# Logs only through PyTorch's SummaryWriter into runs/<name>/, as CleanRL's scripts do: a
# return per "episode" at its global step, a loss per update at others. No runyard in it.
TENSORBOARD_SCRIPT = """\
import argparse, time
from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--name", default="run")
args = parser.parse_args()
writer = SummaryWriter(f"runs/{args.name}")
for episode in range(1, 7):
    step = episode * 100
    writer.add_scalar("charts/episodic_return", args.lr * episode, step)
    writer.add_scalar("charts/learning_rate", args.lr, step)
    writer.add_scalar("losses/value_loss", 1.0 / episode, step + 50)
    writer.flush()
    time.sleep(0.2)
writer.close()
"""


def test_tensorboard_scalars_are_the_trials_reports_and_its_event_files_its_own(tmp_path: Path):
    (tmp_path / "tb.py").write_text(TENSORBOARD_SCRIPT)
    (tmp_path / "runs").mkdir()  # the project's own runs/ folder: not where trials write
    workloads = [command_workload(tmp_path, command=f"python tb.py --lr {lr} --name same",
                                  reports="tensorboard",
                                  metrics={"charts/episodic_return": "max"})
                 for lr in (1.0, 2.0)]
    iterations = [[], []]
    # Both programs run at once, writing runs/same/ relative to their working directories.
    for _ in range(6):
        for done, workload in zip(iterations, workloads):
            done.append(workload.step())
    for lr, done, workload in zip((1.0, 2.0), iterations, workloads):
        assert [(it.step, it.metrics["charts/episodic_return"]) for it in done] == \
            [(100 * n, pytest.approx(lr * n)) for n in range(1, 7)]
        assert done[1].points == ((150, {"losses/value_loss": 1.0}),
                                  (200, {"charts/learning_rate": lr}))
        with pytest.raises(WorkloadFinished) as finished:
            workload.step()
        assert finished.value.points == ((650, {"losses/value_loss": pytest.approx(1 / 6)}),)
        kept = tmp_path / f"kept-{lr}"
        kept.mkdir()
        workload.artifacts(kept)
        workload.close()
        assert len(list((kept / "tensorboard" / "runs" / "same").glob("*tfevents*"))) == 1
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.slow
def test_a_sweep_of_a_tensorboard_script_tracks_every_tag_at_its_step_per_trial(workdir: Path):
    (workdir / "tb.py").write_text(TENSORBOARD_SCRIPT)
    spec = workdir / "tb.yaml"
    # No stop block: the script ends by itself.
    spec.write_text(textwrap.dedent("""\
        name: tb
        workload: command
        config:
          command: python tb.py --lr {params.lr} --name same
          params: {lr: 1.0}
          reports: tensorboard
          metrics: {charts/episodic_return: max}
        tracking: {experiment: tb}
        sweep:
          search: grid
          metric: charts/episodic_return
          scope: last-5-avg
          max_concurrent: 2
          space:
            config.params.lr: {grid: [1.0, 2.0]}
        """))
    result = run_cli("run", str(spec), "--id", "tb", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri(workdir))
    # Ranked by the mean of each trial's last 5 returns: lr=2 scores 2 * mean(2..6) = 8.
    parent = client.get_run(ledger_of(workdir, "tb").run_id)
    assert parent.data.metrics["best_charts/episodic_return"] == pytest.approx(8.0)
    for run in children_of(client, ledger_of(workdir, "tb").run_id):
        lr = float(run.data.params["config.params.lr"])
        assert run.info.status == "FINISHED"

        def points(metric: str) -> list[tuple[int, float]]:
            return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))

        assert points("charts/episodic_return") == [(100 * n, pytest.approx(lr * n)) for n in range(1, 7)]
        assert points("charts/learning_rate") == [(100 * n, lr) for n in range(1, 7)]
        assert points("losses/value_loss") == [(100 * n + 50, pytest.approx(1 / n)) for n in range(1, 7)]
        assert points("training_iteration") == [(100 * n, n) for n in range(1, 7)]
        events = client.list_artifacts(run.info.run_id, "tensorboard/runs/same")
        assert len(events) == 1 and "tfevents" in events[0].path
    assert not (workdir / "runs").exists()  # nothing written into the project itself


# ------------------------------------------------------------ the program's own packages

def test_the_program_runs_with_the_packages_it_pins_and_runyard_keeps_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from importlib.metadata import version

    from runyard.workloads.blocks import EnvironmentSpec

    monkeypatch.setenv("RUNYARD_ENVIRONMENTS", str(tmp_path / "environments"))
    ours = version("gymnasium")
    script = tmp_path / "versions.py"
    # The pinned gymnasium, and torch from runyard's environment beneath it.
    script.write_text(textwrap.dedent("""\
        import os, gymnasium, torch
        major, minor = gymnasium.__version__.split(".")[:2]
        print(f"major={major} minor={minor} torch={int(torch.ones(1).item())} "
              f"var={os.environ['LAB_FLAG']}")
        """))
    environment = EnvironmentSpec(pip=["gymnasium==0.29.1"], variables={"LAB_FLAG": "7"})
    context = WorkloadContext(workdir=tmp_path, environment=environment)
    config = CommandConfig(command="python versions.py",
                           metrics={"minor": "max", "major": "max", "torch": "max", "var": "max"})
    assert Command.check_inputs(config, context) == []  # builds it
    built = list((tmp_path / "environments").iterdir())
    for _ in range(2):  # the second trial finds it built
        workload = Command()
        workload.setup(config, context)
        assert workload.step().metrics == {"major": 0.0, "minor": 29.0, "torch": 1.0, "var": 7.0}
        workload.close()
    assert list((tmp_path / "environments").iterdir()) == built
    assert version("gymnasium") == ours  # runyard's own environment is untouched


@pytest.mark.slow
def test_a_requirement_pip_cannot_install_stops_the_job_before_anything_starts(
        workdir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RUNYARD_ENVIRONMENTS", str(workdir / "environments"))
    (workdir / "requirements.txt").write_text("# the lab's pins\nno-such-package-runyard-test==9.9.9\n")
    spec = workdir / "pins.yaml"
    spec.write_text(textwrap.dedent("""\
        name: pins
        workload: command
        environment: {requirements: requirements.txt}
        config:
          command: python -c "print('score=1')"
          metrics: {score: max}
        """))
    result = run_cli("run", str(spec), cwd=workdir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "environment.pip" in result.stderr
    assert "no-such-package-runyard-test==9.9.9" in result.stderr
    assert not (workdir / ".runyard" / "mlflow.db").exists()  # no run, no store
    assert not any((workdir / "environments").glob("*/bin"))  # no half-built environment


# Logs to MLflow itself, as many lab scripts do: start_run(), params, a metric per step.
MLFLOW_SCRIPT = """\
import sys, time
import mlflow

lr = float(sys.argv[1])
with mlflow.start_run():
    mlflow.log_param("lr", lr)
    for step in range(1, 11):
        mlflow.log_metric("val_acc", lr * step, step=step * 10)
        mlflow.log_metric("loss", 1.0 / step, step=step * 10)
        time.sleep(0.3)
"""

# mlflow.sklearn.autolog(): the run, params and metrics are the autologger's.
AUTOLOG_SCRIPT = """\
import mlflow, mlflow.sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

mlflow.sklearn.autolog(log_models=False, log_datasets=False)
X, y = load_digits(return_X_y=True)
LogisticRegression(C=float(__import__("sys").argv[1]), max_iter=200).fit(X / 16, y)
"""


@pytest.mark.slow
def test_scripts_that_log_to_mlflow_themselves_log_into_their_trials_runs(workdir: Path):
    (workdir / "logs_itself.py").write_text(MLFLOW_SCRIPT)
    (workdir / "autolog.py").write_text(AUTOLOG_SCRIPT)
    for name, command, metric, stop in [
            ("itself", "python logs_itself.py {params.lr}", "val_acc", "stop: {iterations: 4}"),
            ("autolog", "python autolog.py {params.lr}", "training_score", "")]:
        (workdir / f"{name}.yaml").write_text(textwrap.dedent(f"""\
            name: {name}
            workload: command
            config:
              command: {command}
              params: {{lr: 1.0}}
              reports: mlflow
              metrics: {{{metric}: max}}
            {stop}
            tracking: {{experiment: {name}}}
            sweep:
              search: grid
              metric: {metric}
              max_concurrent: 2
              space:
                config.params.lr: {{grid: [0.5, 2.0]}}
            """))
        result = run_cli("run", f"{name}.yaml", "--id", name, cwd=workdir)
        assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(tracking_uri(workdir))
    itself = children_of(client, ledger_of(workdir, "itself").run_id)
    assert len(itself) == 2
    for run in itself:
        lr = float(run.data.params["config.params.lr"])
        assert run.data.params["lr"] == str(lr)  # the script's own param, beside runyard's
        history = sorted((m.step, m.value) for m in
                         client.get_metric_history(run.info.run_id, "val_acc"))
        # Stopped after 4 iterations (the stop condition), each logged once, by the script.
        assert history[:4] == [(10 * n, pytest.approx(lr * n)) for n in range(1, 5)]
        assert len(history) == len({step for step, _ in history}) < 10
        assert [m.step for m in client.get_metric_history(run.info.run_id, "training_iteration")
                ][:4] == [10, 20, 30, 40]
    autolog = children_of(client, ledger_of(workdir, "autolog").run_id)
    assert {run.info.status for run in autolog} == {"FINISHED"} and len(autolog) == 2
    assert all(run.data.metrics["training_score"] > 0.5 and run.data.params["C"] in ("0.5", "2.0")
               for run in autolog)
    # No run outside the jobs, no store of the scripts' own in the project.
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    assert "Default" not in experiments or not client.search_runs([experiments["Default"]])
    assert len(client.search_runs([experiments["itself"], experiments["autolog"]])) == 6
    assert not (workdir / "mlruns").exists() and not (workdir / "mlflow.db").exists()
