"""TPE against random search on toy.bowl, a 4-d objective with a known optimum (best score 1).

Part 1, search quality: how many configs each search tries before one is within 1% of the
optimum (noise-free score >= 0.99), over --repeats job seeds, each config on 2 seeds with
noise 0.02 (TPE is told the seed mean). TPE runs through runyard's own searcher chain,
asked and told as Tune does with one pending trial at a time; random search is runyard's own
draw (plan.expand). No Ray trials: the objective is a formula, so thousands of configs cost
seconds. Part 2, the cost of proposing while the sweep runs: one 24-config x 2-seed sweep of
toy.bowl (3 steps of 0.2 s) through runyard's driver on an embedded Ray with 2 CPUs, random
vs TPE, side by side.

    PYTHONPATH=platform python benchmarks/tpe_vs_random.py
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe, timed_run_job  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "jobs" / "toy_bowl_tpe.yaml"
WITHIN = 0.99


def configs_to_reach(scores: list[float]) -> int | None:
    return next((i + 1 for i, score in enumerate(scores) if score >= WITHIN), None)


def tpe_scores(seed: int, configs: int, startup: int) -> list[float]:
    """Noise-free scores of the configs TPE proposes, in order."""
    from runyard.execute.adaptive import ProposedTrials
    from runyard.execute.payload import TrialPayload
    from runyard.execute.tune_runner import trial_payload
    from runyard.spec import load_spec
    from runyard.workloads.toy import bowl_score

    spec = load_spec(SPEC, [f"seed={seed}", f"sweep.samples={configs}", f"sweep.startup={startup}"])
    searcher = ProposedTrials(spec, 0, functools.partial(trial_payload, spec, workdir=ROOT,
                                                         storage=ROOT / "unused"))
    noise = spec.config["noise"]
    scores = []
    for number in range(configs * spec.sweep.seeds):
        payload = TrialPayload.of(searcher.suggest(str(number)))
        rng = np.random.default_rng([payload.seed, payload.sample])
        reported = (1 - 0.5**3) * bowl_score(payload.config) + noise * rng.standard_normal()
        searcher.on_trial_complete(str(number), {"score": float(reported)})
        if payload.seed == spec.seed:
            scores.append(bowl_score(payload.config))
    return scores


def random_scores(seed: int, configs: int) -> list[float]:
    from runyard.plan import expand
    from runyard.spec import load_spec
    from runyard.workloads.toy import bowl_score

    spec = load_spec(SPEC, [f"seed={seed}", f"sweep.samples={configs}", "sweep.search=random",
                            "sweep.startup=null"])
    return [bowl_score(t.config) for t in expand(spec) if t.seed == spec.seed]


def sweep_seconds(search: str, workdir: Path) -> float:
    text = SPEC.read_text().replace("config: {noise: 0.02}", "config: {noise: 0.02, sleep_s: 0.2}")
    if search == "random":
        text = text.replace("search: tpe", "search: random").replace("  startup: 8", "  # startup")
    from runyard.tracking.store import resolve_tracking_uri

    workdir.mkdir(parents=True)
    return timed_run_job(workdir / "bowl.yaml", text, resolve_tracking_uri(None, workdir), workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", type=int, default=150, help="budget of configs per search")
    parser.add_argument("--startup", type=int, default=10)
    parser.add_argument("--skip-sweeps", action="store_true", help="part 1 only")
    args = parser.parse_args()

    print(f"machine: {describe()}")
    print(f"\n### Configs until one is within 1% of the optimum (budget {args.configs}, "
          f"2 seeds each, TPE startup {args.startup})\n")
    print("| job seed | TPE | random | TPE best at 24 | random best at 24 |")
    print("|---|---|---|---|---|")
    reached = {"tpe": [], "random": []}
    for seed in range(args.repeats):
        tpe, drawn = tpe_scores(seed, args.configs, args.startup), random_scores(seed, args.configs)
        for name, scores in (("tpe", tpe), ("random", drawn)):
            reached[name].append(configs_to_reach(scores) or args.configs + 1)
        shown = [str(configs_to_reach(s) or f"> {args.configs}") for s in (tpe, drawn)]
        print(f"| {seed} | {shown[0]} | {shown[1]} | {max(tpe[:24]):.4f} | {max(drawn[:24]):.4f} |")
    medians = {name: statistics.median(values) for name, values in reached.items()}
    print(f"| median | {medians['tpe']:g} | {medians['random']:g} | | |")

    if args.skip_sweeps:
        return
    from runyard.launch import ray_session

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    seconds = {}
    with tempfile.TemporaryDirectory() as scratch, ray_session(num_cpus=2):
        for search in ("random", "tpe"):
            seconds[search] = sweep_seconds(search, Path(scratch) / search)
    print("\n### One 24-config x 2-seed sweep through runyard's driver, embedded Ray, 2 CPUs\n")
    print("| search | seconds | per trial |")
    print("|---|---|---|")
    for search, value in seconds.items():
        print(f"| {search} | {value:.1f} | {value / 48:.2f} |")
    print(f"\nratio TPE / random: {seconds['tpe'] / seconds['random']:.2f}  ({describe()})")


if __name__ == "__main__":
    main()
