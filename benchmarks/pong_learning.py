"""Pong from pixels, learned: jobs/pong_pg.yaml through `runyard run` for a training-time budget,
in as many sittings as it takes, and its learning curve.

The budget is `stop.time_s`, which counts training wall time summed over resumes (Tune keeps
it in every checkpoint). A sitting runs for at most --sitting-s seconds and then interrupts the
driver as Ctrl-C would; the next call continues the same job with `runyard resume`. After each
sitting the curve (mean return of the last 100 episodes against episodes, env steps and
training wall time) is read back from MLflow, drawn to --plot and written into BENCHMARKS.md
between the `pong_learning` markers.

    PYTHONPATH=platform python benchmarks/pong_learning.py --budget-s 3600 --sitting-s 3700
    PYTHONPATH=platform python benchmarks/pong_learning.py --sitting-s 180      # a smoke run
    PYTHONPATH=platform python benchmarks/pong_learning.py --game-only          # game.gif of the newest policy

The 100-episode mean return > 0 (the built-in AI beaten) also ends the job: it is the spec's
stop condition. When the job has ended, its newest policy plays whole games until it wins
one, and that game's GIF joins the run's artifacts (`--game-only` does just this).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import CTRL_C_AS_AT_A_TERMINAL, describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNYARD = Path(sys.executable).with_name("runyard")
MARK_BEGIN, MARK_END = "<!-- pong_learning:begin -->", "<!-- pong_learning:end -->"


def sitting(workdir: Path, job_id: str, budget_s: float, sitting_s: float, num_cpus: int | None) -> int:
    """One sitting: start the job, or resume it if it has started before; interrupt it after
    sitting_s seconds. Returns the driver's exit status (None-like -2 when interrupted)."""
    started = (workdir / "job_id").exists()
    if started:
        command = [str(RUNYARD), "resume", job_id]
    else:
        command = [str(RUNYARD), "run", str(ROOT / "jobs" / "pong_pg.yaml"), "--id", job_id,
                   "--set", f"stop.time_s={budget_s:g}", "--set", "checkpoint.every=2"]
        (workdir / "job_id").write_text(job_id)
    if num_cpus:
        command += ["--num-cpus", str(num_cpus)]
    print("$ " + " ".join(command), flush=True)
    driver = subprocess.Popen([*CTRL_C_AS_AT_A_TERMINAL, *command], cwd=workdir, start_new_session=True)
    try:
        return driver.wait(timeout=sitting_s)
    except subprocess.TimeoutExpired:
        driver.send_signal(signal.SIGINT)  # as Ctrl-C: Tune checkpoints and the job can resume
        try:
            driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        return -2


def job_run(workdir: Path, job_id: str):
    """The job's MLflow client and run (one trial: the job's run is the trial's)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / '.runyard' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pong-pg")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`runyard.sweep_id` = '{job_id}'")
    return client, run


def curve(workdir: Path, job_id: str) -> list[dict[str, float]]:
    """Per iteration: episodes, env steps, training seconds so far, the last-100 mean return."""
    client, run = job_run(workdir, job_id)
    history = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
               for name in ("episodes_total", "env_steps_total", "episode_return_mean_100",
                            "sample_time_s", "learn_time_s")}
    rows, seconds = [], 0.0
    for step in sorted(history["episodes_total"]):
        seconds += history["sample_time_s"].get(step, 0.0) + history["learn_time_s"].get(step, 0.0)
        if step in history["episode_return_mean_100"]:
            rows.append({"iteration": step, "episodes": history["episodes_total"][step],
                         "env_steps": history["env_steps_total"][step], "train_s": seconds,
                         "return_100": history["episode_return_mean_100"][step]})
    return rows


def record_game(workdir: Path, job_id: str) -> str:
    """The job's policy at its newest checkpoint plays whole games, as in training, until it
    wins one (visualize.game_gif); the GIF and its score join the job's run's artifacts
    (game.gif, game.txt), beside those the trial wrote when it ended."""
    import tempfile

    import torch

    from runyard.spec import load_spec
    from runyard.workloads.rl import policies, visualize
    from runyard.workloads.rl.policy_spec import PolicySpec
    from runyard.workloads.rl.rollout import env_spaces, make_env

    spec = load_spec(ROOT / "jobs" / "pong_pg.yaml")
    newest = max((workdir / ".runyard" / "ray_results" / job_id).glob("*/checkpoint_*/state/rl_state.pt"))
    policy = policies.Policy(PolicySpec.model_validate(spec.config["policy"]), *env_spaces(spec.env))
    policy.load_state_dict(torch.load(newest, weights_only=False)["policy"])
    client, run = job_run(workdir, job_id)
    with tempfile.TemporaryDirectory() as scratch:
        game = visualize.game_gif(lambda: make_env(spec.env), policy, Path(scratch) / "game.gif",
                                  seed=spec.seed, tries=20)
        (Path(scratch) / "game.txt").write_text(f"{game.describe()}; policy of {newest.parent.parent.name}\n")
        for name in ("game.gif", "game.txt"):
            client.log_artifact(run.info.run_id, str(Path(scratch) / name))
    return f"{game.describe()}; policy of {newest.parent.parent.name}; in run {run.info.run_id}'s artifacts"


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for axis, (key, label) in zip(axes, (("episodes", "episodes"), ("env_steps", "env steps"),
                                         ("train_s", "training wall time (s)"))):
        axis.plot([r[key] for r in rows], [r["return_100"] for r in rows])
        axis.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        axis.set_xlabel(label)
    axes[0].set_ylabel("mean return, last 100 episodes")
    figure.suptitle("rl.pg on ALE/Pong-v5 (jobs/pong_pg.yaml); above 0 beats the built-in AI")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def write_section(rows: list[dict[str, float]], plot_path: Path, machine: str, sittings: str) -> str:
    if not rows:
        return ""
    marks = sorted({min(len(rows) - 1, round(i * (len(rows) - 1) / 8)) for i in range(9)})
    lines = [MARK_BEGIN,
             f"`pong_learning.py`: jobs/pong_pg.yaml unchanged, {sittings}; {machine}. "
             f"Plot: `{plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path}`.",
             "",
             "| iteration | episodes | env steps | training wall time | mean return, last 100 episodes |",
             "|---|---|---|---|---|"]
    for i in marks:
        r = rows[i]
        lines.append(f"| {r['iteration']} | {r['episodes']:.0f} | {r['env_steps']:,.0f} | "
                     f"{r['train_s'] / 60:.1f} min | {r['return_100']:.1f} |")
    lines.append(MARK_END)
    section = "\n".join(lines)
    benchmarks = ROOT / "BENCHMARKS.md"
    text = benchmarks.read_text()
    if MARK_BEGIN in text:
        before, rest = text.split(MARK_BEGIN, 1)
        text = before + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    benchmarks.write_text(text)
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=3600, help="training wall time, over all sittings")
    parser.add_argument("--sitting-s", type=float, default=3700, help="this sitting's wall time at most")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".runyard-pong-learning")
    parser.add_argument("--job-id", default="pong-learning")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "figures" / "pong_learning.png")
    parser.add_argument("--game-only", action="store_true",
                        help="train no more: record a game of the job's newest policy (game.gif)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.game_only:
        print(record_game(args.workdir, args.job_id))
        return
    load_before = describe()
    start = time.perf_counter()
    status = sitting(args.workdir, args.job_id, args.budget_s, args.sitting_s, args.num_cpus)
    elapsed = time.perf_counter() - start
    rows = curve(args.workdir, args.job_id)
    if rows:
        plot(rows, args.plot)
    log = args.workdir / "sittings.txt"
    with log.open("a") as f:
        f.write(f"{elapsed:.0f} s, exit {status}, {load_before}\n")
    sittings = log.read_text().strip().splitlines()
    summary = (f"{len(sittings)} sitting(s) of " + ", ".join(s.split(",")[0] for s in sittings)
               + f" against a {args.budget_s:g} s training budget")
    print(write_section(rows, args.plot, f"machine at the start of the last sitting: {load_before}", summary))
    print("driver exit status:", "interrupted after the sitting (resume to continue)" if status == -2 else status)
    if status == 0:  # the job ended: the built-in AI beaten, or the budget spent
        print(record_game(args.workdir, args.job_id))


if __name__ == "__main__":
    main()
