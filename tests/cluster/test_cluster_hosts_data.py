"""Data from storage on hosts that share nothing but a bridge and a storage folder: trials on
the worker hosts read a prepared dataset named by its URI in the storage, each host from its
own verified copy; a dataset that is not there is refused by the driver on the head before any
trial starts. The laptop submits both and never reads the storage."""

from __future__ import annotations

import shutil

import pytest
from mlflow.tracking import MlflowClient
from runyard_testing import finished, job_runs, laptop, write_separable_shards

from runyard.ray_compat import experiment_trials

pytestmark = pytest.mark.slow

SWEEP = """\
name: stored-data
workload: sl.linear
config: {{batch_size: 32, lr: 0.01}}
data: {{path: '{uri}', shuffle_buffer: 256}}
stop: {{iterations: 2}}
tracking: {{experiment: hosts-stored}}
sweep:
  samples: 2
  metric: val_top1
  space:
    config.init_std: {{loguniform: [1.0e-4, 1.0e-2]}}
"""


def cached_files(hosts, name: str) -> list[str]:
    """The dataset files in a host's own cache (its home is its own; ~/.cache/runyard/datasets)."""
    listing = hosts.on_host(name, "sh", "-c", 'cd "$HOME/.cache/runyard/datasets" 2>/dev/null && '
                                              "find . -type f ! -name .lock | sort")
    return listing.stdout.split()


def test_trials_on_worker_hosts_read_a_dataset_in_storage_and_a_missing_one_is_refused(
        namespaced_hosts, tmp_path, monkeypatch):
    hosts = namespaced_hosts
    # The researcher copies the folder `runyard data prepare` wrote into the storage.
    dataset = write_separable_shards(hosts.storage / "datasets" / "colours16", 2, 200, 16)
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    for name, folder in (("dataset", dataset), ("missing", hosts.storage / "datasets" / "nowhere")):
        (project / "jobs" / f"{name}.yaml").write_text(SWEEP.format(uri=folder.as_uri()))
    suffix = hosts.cluster.cluster_id[:6]
    try:
        for name in ("dataset", "missing"):  # both at once: the refusal takes no trial's CPU
            submitted = laptop(hosts, project, "submit", f"jobs/{name}.yaml", "--id", f"{name}-{suffix}")
            assert submitted.returncode == 0, submitted.stderr

        state, log = finished(hosts, f"missing-{suffix}", timeout_s=300)
        assert state == "FAILED", log[-3000:]
        missing_uri = (hosts.storage / "datasets" / "nowhere").as_uri()
        assert f"data.path: {missing_uri}: no manifest.json there" in log, log[-3000:]
        assert job_runs(hosts, monkeypatch, "hosts-stored", f"missing-{suffix}") == []  # refused before any run

        job_id = f"dataset-{suffix}"  # not "stored-": the storage test's id on the same cluster
        state, log = finished(hosts, job_id, timeout_s=420)
        assert state == "SUCCEEDED", log[-4000:]
        runs = job_runs(hosts, monkeypatch, "hosts-stored", job_id)
        trials = [r for r in runs if r.data.tags["runyard.kind"] == "trial"]
        assert len(trials) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        client = MlflowClient(hosts.cluster.tracking_uri)
        for trial in trials:
            top1 = client.get_metric_history(trial.info.run_id, "val_top1")
            assert [m.step for m in top1] == [1, 2] and top1[-1].value > 0.5  # it learned the colours

        # Each trial ran on a worker host (the head has no CPU), from that host's own copy:
        # every shard and the manifest, byte for byte what is in storage.
        ran_on = {runtime["last_result"]["hostname"]
                  for _, runtime in experiment_trials(hosts.storage / "ray_results" / job_id)}
        assert ran_on and ran_on <= {"worker-1", "worker-2"}, ran_on
        expected = sorted(p.name for p in dataset.iterdir() if p.is_file())
        for host in ran_on:
            files = cached_files(hosts, host)
            assert sorted(f.rsplit("/", 1)[-1] for f in files) == expected, (host, files)
        assert cached_files(hosts, "head") == []  # the driver checked the storage, copied nothing
    finally:
        shutil.rmtree(hosts.storage / "datasets", ignore_errors=True)
