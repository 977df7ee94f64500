"""Wall time and env steps until mean episode return >= 475 on CartPole-v1, side by side:
rl.pg, rl.trpo, rl.cem (runyard, in-process rollout pool) and rllib.PPO (RLlib's new API stack,
one env runner), each with the settings of its job spec in jobs/ and the spec's seed.

    PYTHONPATH=platform python benchmarks/cartpole_to_475.py [--time-limit 900] [--skip-rllib]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe  # noqa: E402

from runyard.workloads import get  # noqa: E402
from runyard.workloads.base import WorkloadContext  # noqa: E402

JOBS = Path(__file__).resolve().parents[1] / "jobs"
RUNS = [("rl.pg", "cartpole_pg.yaml"), ("rl.trpo", "cartpole_trpo.yaml"), ("rl.cem", "cartpole_cem.yaml"),
        ("rllib.PPO", "cartpole_ppo_rllib.yaml")]


def run_to_threshold(spec: dict, threshold: float, time_limit: float, max_iterations: int) -> dict:
    cls = get(spec["workload"])
    workload = cls()
    context = WorkloadContext(seed=spec["seed"], env=spec["env"], rollout=spec.get("rollout"),
                              resources=spec.get("resources", {}))
    setup_start = time.perf_counter()
    workload.setup(cls.Config(**spec["config"]), context)
    setup_s = time.perf_counter() - setup_start
    start, best, iterations, metrics = time.perf_counter(), float("-inf"), 0, {}
    try:
        while time.perf_counter() - start < time_limit and iterations < max_iterations:
            metrics = workload.step()
            iterations += 1
            best = max(best, metrics.get("episode_return_mean", float("-inf")))
            if best >= threshold:
                break
    finally:
        workload.close()
    return {"reached": best >= threshold, "best": best, "iterations": iterations, "setup_s": setup_s,
            "wall_s": time.perf_counter() - start, "env_steps": metrics.get("env_steps_total", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=475.0)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds per algorithm")
    parser.add_argument("--skip-rllib", action="store_true")
    args = parser.parse_args()
    rows = []
    for workload, job in RUNS:
        if args.skip_rllib and workload.startswith("rllib."):
            continue
        spec = yaml.safe_load((JOBS / job).read_text())
        result = run_to_threshold(spec, args.threshold, args.time_limit, spec["stop"]["iterations"])
        rows.append((workload, result))
        print(f"{workload}: {result}", flush=True)
    print(f"\nmachine: {describe()}")
    print(f"CartPole-v1 to mean return {args.threshold:g}, settings and seed from jobs/*.yaml")
    print(f"{'workload':<12}{'reached':>9}{'best':>8}{'iters':>7}{'env steps':>12}{'wall s':>9}{'setup s':>9}")
    for workload, r in rows:
        print(f"{workload:<12}{'yes' if r['reached'] else 'no':>9}{r['best']:>8.1f}{r['iterations']:>7}"
              f"{r['env_steps']:>12.0f}{r['wall_s']:>9.1f}{r['setup_s']:>9.1f}")


if __name__ == "__main__":
    main()
