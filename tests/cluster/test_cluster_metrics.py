"""runyard's metrics: the dashboard plots only defined metrics, and a running cluster exports them."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml

from runyard.execute import metrics
from runyard.launch import jobs_api
from runyard_testing import RUNYARD

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "grafana" / "runyard-experiments.json"
PROMETHEUS = ROOT / "dashboards" / "prometheus.yml"
RAY_NODE_METRICS_SOURCE = Path(ray.__file__).parent / "dashboard" / "modules" / "reporter" / "reporter_agent.py"
METRIC_NAME = re.compile(r"\bray_[a-z0-9_]+\b")


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    queries += [(variable["name"], variable["definition"]) for variable in dashboard["templating"]["list"] if "definition" in variable]
    return queries


def test_every_panel_query_names_a_defined_metric():
    ray_node_metrics = RAY_NODE_METRICS_SOURCE.read_text()
    for title, expr in dashboard_queries():
        names = METRIC_NAME.findall(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for name in names:
            defined_by_runyard = name in metrics.prometheus_names()
            defined_by_ray = f'"{name.removeprefix("ray_")}"' in ray_node_metrics
            assert defined_by_runyard or defined_by_ray, f"{title}: {name} is defined nowhere"


def test_dashboard_has_the_experiment_panels():
    titles = " | ".join(title for title, _ in dashboard_queries()).lower()
    for wanted in ("trials by state", "env steps / s", "images / s", "gpu utilization", "tracking backlog"):
        assert wanted in titles


def test_prometheus_scrapes_rays_service_discovery_file():
    config = yaml.safe_load(PROMETHEUS.read_text())
    files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert any(f.endswith("prom_metrics_service_discovery.json") for f in files)


REAL_RUN = """\
name: fed
workload: rl.pg
env: {id: CartPole-v1}
config: {policy: {hidden: [16]}, batch_episodes: 4}
rollout: {backend: local, envs_per_worker: 4}
stop: {iterations: 100000, time_s: 240}
tracking: {experiment: metrics-check}
"""


def scrape(service_discovery: str) -> str:
    text = ""
    for group in json.loads(Path(service_discovery).read_text()):
        for target in group["targets"]:
            try:
                with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
                    text += response.read().decode()
            except OSError:
                continue  # a node's exporter may be restarting; the next round retries
    return text


@pytest.mark.slow
def test_a_real_run_feeds_the_exported_metrics(local_ray_cluster, tmp_path, monkeypatch):
    """A submitted RL job, nothing recorded by hand: its trial states, throughput, env-step
    counter and tracking backlog reach Prometheus through the nodes' metrics agents."""
    cluster = local_ray_cluster.cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(cluster.token_path))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "fed.yaml").write_text(REAL_RUN)
    submitted = subprocess.run([str(RUNYARD), "submit", "jobs/fed.yaml", "--id", "fed-1",
                                "--address", cluster.jobs_address], cwd=tmp_path,
                               capture_output=True, text=True, timeout=180)
    assert submitted.returncode == 0, submitted.stderr
    wanted = {"ray_runyard_trials", "ray_runyard_env_steps_per_second",
              "ray_runyard_env_steps_total", "ray_runyard_tracking_backlog"}
    try:
        deadline = time.monotonic() + 240
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = [line for line in scrape(cluster.prometheus_service_discovery).splitlines()
                     if line.startswith("ray_runyard") and 'experiment="metrics-check"' in line]
            steps = [float(line.rsplit(" ", 1)[1]) for line in lines
                     if line.startswith("ray_runyard_env_steps_total")]
            # The driver's trial-state gauge and the trial's step counter are exported apart:
            # the steps can show up while the gauge still reads the trial as not yet RUNNING.
            running = [float(line.rsplit(" ", 1)[1]) for line in lines
                       if line.startswith("ray_runyard_trials") and 'state="RUNNING"' in line]
            if (wanted <= {line.split("{")[0] for line in lines} and steps and max(steps) > 0
                    and running == [1.0]):
                break
            time.sleep(2)
        else:
            raise AssertionError("exported:\n" + "\n".join(lines) + "\n" + "".join(
                jobs_api.logs("fed-1", cluster.jobs_address, state_dir=cluster.state_dir))[-3000:])
        running = [line for line in lines if line.startswith("ray_runyard_trials") and 'state="RUNNING"' in line]
        assert running and float(running[0].rsplit(" ", 1)[1]) == 1.0
        throughput = [float(line.rsplit(" ", 1)[1]) for line in lines
                      if line.startswith("ray_runyard_env_steps_per_second") and 'trial_id="t0000"' in line]
        assert throughput and throughput[0] > 0
    finally:
        jobs_api.stop("fed-1", cluster.jobs_address, state_dir=cluster.state_dir)
