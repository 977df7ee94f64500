"""A real sweep with `seeds: 3` and ASHA: the scheduler judges configs by their seed mean (the
best config is never cut, worse ones are, with all the seeds still running), and the parent
run ends with the sweep's plots as artifacts under plots/."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import children_of, ledger_of, run_cli, tracking_uri
from runyard.tracking.plots import CURVES_FILE, OBJECTIVE_FILE, PARALLEL_FILE

pytestmark = pytest.mark.slow

SWEEP = """\
name: seeded
workload: toy.quadratic
config: {sleep_s: 0.05}
stop: {iterations: 8}
tracking: {experiment: toy}
sweep:
  samples: 1
  seeds: 3
  metric: score
  max_concurrent: 3
  space:
    config.x: {grid: [0.3, 0.6, 1.0, 1.2]}
  scheduler: {asha: {grace: 1, max_t: 8, reduction_factor: 2}}
"""


def test_seed_mean_asha_sweep_and_its_plots(workdir: Path):
    spec = workdir / "seeded.yaml"
    spec.write_text(SWEEP)
    result = run_cli("run", str(spec), "--id", "seeded", "--num-cpus", "2", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr

    client = MlflowClient(tracking_uri(workdir))
    ledger = ledger_of(workdir, "seeded")
    children = children_of(client, ledger.run_id)
    iterations: dict[float, list[int]] = {}
    for run in children:
        iterations.setdefault(float(run.data.params["config.x"]), []).append(
            int(run.data.metrics.get("training_iteration", 0)))
    assert iterations[0.3] == [8, 8, 8]  # the best config: never cut
    stopped = [x for x, its in iterations.items() if min(its) < 8]
    assert stopped and 0.3 not in stopped
    assert sum(map(sum, iterations.values())) < 12 * 8

    plots = {a.path for a in client.list_artifacts(ledger.run_id, "plots")}
    assert plots == {f"plots/{OBJECTIVE_FILE}", f"plots/{CURVES_FILE}", f"plots/{PARALLEL_FILE}"}
    page = Path(client.download_artifacts(ledger.run_id, f"plots/{PARALLEL_FILE}", str(workdir)))
    assert page.read_text().count('<polyline class="config"') == 4
