"""rl.trpo on MuJoCo Hopper-v5 with jobs/hopper_trpo.yaml: mean episode return after N env steps
(default 1M). Reference: Spinning Up's TRPO benchmark reaches ~1,900 on Hopper at 3M steps.

    PYTHONPATH=platform nice python benchmarks/hopper_trpo.py [--env-steps 1000000] [--out DIR]

Prints one line per iteration (to follow a background run) and a summary table; the learning
curve goes to DIR/learning_curve.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe  # noqa: E402

from runyard.workloads import get  # noqa: E402
from runyard.workloads.base import WorkloadContext  # noqa: E402

JOB = Path(__file__).resolve().parents[1] / "jobs" / "hopper_trpo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-steps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "runyard_hopper_trpo")
    args = parser.parse_args()
    spec = yaml.safe_load(JOB.read_text())
    cls = get(spec["workload"])
    trpo = cls()
    trpo.setup(cls.Config(**spec["config"]), WorkloadContext(
        seed=spec["seed"], env=spec["env"], rollout=spec["rollout"], resources=spec["resources"]))
    start, history = time.perf_counter(), []
    try:
        while not history or history[-1]["env_steps_total"] < args.env_steps:
            metrics = trpo.step()
            history.append(metrics)
            print(f"{len(history):4d} steps {metrics['env_steps_total']:>9.0f} "
                  f"return {metrics.get('episode_return_mean', float('nan')):8.1f} "
                  f"kl {metrics['kl']:.4f} ls {metrics['line_search_steps']:.0f} "
                  f"t {time.perf_counter() - start:7.0f}s", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        trpo.artifacts(args.out)
    finally:
        trpo.close()
    returns = [m["episode_return_mean"] for m in history if "episode_return_mean" in m]
    print(f"\nmachine: {describe()}")
    print(f"{'env steps':>10}{'iterations':>12}{'return (last)':>15}{'return (last 10 mean)':>23}{'wall s':>9}")
    print(f"{history[-1]['env_steps_total']:>10.0f}{len(history):>12}{returns[-1]:>15.1f}"
          f"{np.mean(returns[-10:]):>23.1f}{time.perf_counter() - start:>9.0f}")


if __name__ == "__main__":
    main()
