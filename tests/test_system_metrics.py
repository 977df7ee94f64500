"""System metrics per trial: sampled in the trial process at the interval the spec sets,
logged by the driver into the trial's run with the times they were taken; off when the spec
says `tracking.system_metrics: false`."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard_testing import RUNYARD, run_cli, tracking_uri
from runyard.execute.system_metrics import SystemSampler

JOB = """\
name: {name}
workload: toy.quadratic
config: {{sleep_s: 0.25}}
stop: {{iterations: {iterations}}}
checkpoint: {{every: 0}}
tracking: {{experiment: system-metrics, system_metrics: {every}}}
"""
NAMES = {"system/cpu_utilization_percentage", "system/process_memory_rss_megabytes",
         "system/system_memory_usage_megabytes", "system/system_memory_usage_percentage"}


def test_the_sampler_takes_one_timestamped_sample_per_interval():
    sampler = SystemSampler(every_s=0.1)
    before = time.time() * 1000
    time.sleep(0.75)
    sampler.stop()
    samples = sampler.drain()
    assert 3 <= len(samples) <= 8, len(samples)
    assert [s.index for s in samples] == list(range(len(samples)))
    assert before < samples[0].timestamp_ms < samples[-1].timestamp_ms <= time.time() * 1000
    assert set(samples[0].values) == NAMES  # no GPU (or no pynvml) on this machine
    assert samples[0].values["system/process_memory_rss_megabytes"] > 10  # this interpreter
    assert sampler.drain() == []


def test_a_bad_interval_is_refused_at_validation(workdir: Path):
    (workdir / "job.yaml").write_text(JOB.format(name="bad", iterations=2, every=0))
    result = run_cli("validate", "job.yaml", cwd=workdir)
    assert result.returncode == 2
    assert "tracking.system_metrics" in result.stderr and "false for none" in result.stderr


@pytest.mark.slow
def test_a_trial_run_holds_one_sample_per_interval_of_its_wall_time_and_none_when_off(workdir: Path):
    every = 0.5
    jobs = {"sampled": JOB.format(name="sampled", iterations=12, every=every),
            "unsampled": JOB.format(name="unsampled", iterations=2, every="false")}
    drivers = {}
    for name, text in jobs.items():  # side by side, each with its own store and its own Ray
        (workdir / name).mkdir()
        (workdir / name / "job.yaml").write_text(text)
        drivers[name] = subprocess.Popen([str(RUNYARD), "run", "job.yaml", "--num-cpus", "1"],
                                         cwd=workdir / name, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    for name, driver in drivers.items():
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out

    def run_of(name: str):
        client = MlflowClient(tracking_uri(workdir / name))
        experiment = client.get_experiment_by_name("system-metrics")
        return client, client.search_runs([experiment.experiment_id])[0]

    _, off = run_of("unsampled")
    assert not [k for k in off.data.metrics if k.startswith("system/")]
    client, on = run_of("sampled")
    assert {k for k in on.data.metrics if k.startswith("system/")} == NAMES

    history = client.get_metric_history(on.info.run_id, "system/cpu_utilization_percentage")
    stamps = sorted(m.timestamp for m in history)
    trained_s = on.data.metrics["time_total_s"]  # 12 steps of 0.25 s: ~3 s in the trial
    run_s = (on.info.end_time - on.info.start_time) / 1000
    # About one per interval of the trial's life: at least half of its training time's
    # worth, at most its run's whole span's worth (loose: the machine is shared).
    assert 0.5 * trained_s / every - 1 <= len(stamps) <= run_s / every + 1, (len(stamps), trained_s, run_s)
    assert on.info.start_time <= stamps[0] and stamps[-1] <= on.info.end_time
    spacing = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) / 1000
    assert 0.5 * every <= spacing <= 2 * every, spacing
    rss = client.get_metric_history(on.info.run_id, "system/process_memory_rss_megabytes")
    assert len(rss) == len(stamps) and min(m.value for m in rss) > 20
