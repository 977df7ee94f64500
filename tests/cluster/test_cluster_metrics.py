"""runyard's metrics: the dashboard plots only defined metrics, and a running cluster exports them."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml

from runyard.execute import metrics
from runyard.launch import jobs_api

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


RECORDER = textwrap.dedent(
    """
    import time
    import ray
    from runyard.execute import metrics

    ray.init()

    @ray.remote(num_cpus=0, resources={"gpu_node": 1})
    class Trial:
        def step(self):
            metrics.record_throughput("trial-a", experiment="metrics-check", env_steps_per_s=1234.5, images_per_s=67.0)
            metrics.record_progress("trial-a", experiment="metrics-check", env_steps=4096, images=256)
            return ray.get_runtime_context().get_node_id()

    trial = Trial.remote()
    ray.get(trial.step.remote())
    metrics.record_trial_states({"RUNNING": 1, "PENDING": 3}, experiment="metrics-check")
    metrics.record_tracking_backlog(42, experiment="metrics-check")
    print("recorded", flush=True)
    time.sleep(120)
    """
)


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
def test_recorded_metrics_are_exported_by_the_running_cluster(local_ray_cluster, tmp_path):
    cluster = local_ray_cluster.cluster
    shutil.copytree(ROOT / "platform" / "runyard", tmp_path / "runyard", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "recorder.py").write_text(RECORDER)
    job = jobs_api.submit("python recorder.py", cluster.jobs_address, tmp_path, state_dir=cluster.state_dir).job_id
    try:
        deadline = time.monotonic() + 120
        while "recorded" not in "".join(jobs_api.logs(job, cluster.jobs_address, state_dir=cluster.state_dir)):
            assert time.monotonic() < deadline, "the recorder job did not get to record"
            time.sleep(1)
        exported = ""
        while time.monotonic() < deadline:
            exported = scrape(cluster.prometheus_service_discovery)
            if all(name in exported for name in metrics.prometheus_names()):
                break
            time.sleep(2)
        lines = [line for line in exported.splitlines() if line.startswith("ray_runyard") and 'experiment="metrics-check"' in line]
        assert {line.split("{")[0] for line in lines} == metrics.prometheus_names()
        values = {re.sub(r",?(Component|NodeAddress|SessionName|Version|WorkerId|JobId)=\"[^\"]*\"", "", line.rsplit(" ", 1)[0]): float(line.rsplit(" ", 1)[1]) for line in lines}
        by_name = lambda name, label="": [v for k, v in values.items() if k.startswith(name + "{") and label in k]
        assert by_name("ray_runyard_env_steps_per_second", 'trial_id="trial-a"') == [1234.5]
        assert by_name("ray_runyard_env_steps_total") == [4096.0]
        assert by_name("ray_runyard_trials", 'state="PENDING"') == [3.0]
        assert by_name("ray_runyard_trials", 'state="ERROR"') == [0.0]
        assert by_name("ray_runyard_tracking_backlog") == [42.0]
    finally:
        jobs_api.stop(job, cluster.jobs_address, state_dir=cluster.state_dir)
