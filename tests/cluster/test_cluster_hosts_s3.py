"""A job whose storage is a bucket, on hosts that share nothing but a bridge: an S3 API (moto's
server) on the bridge's laptop side, where every host reaches it as a cloud node reaches S3.
The bucket's endpoint and credentials travel with the submitted job, to the driver and to the
trial processes on the worker hosts, and never into the job's runs or printed output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard.data.imagenet import prepare_imagenet
from runyard.data.synth import write_synthetic_imagenet
from runyard.execute.storage import ENV
from runyard_testing import finished, job_runs, laptop, run_cli, s3_bucket, toy_sweep

pytestmark = pytest.mark.slow

SWEEP = toy_sweep("in-bucket", "hosts-s3", 0.2, 3)

# 0.6 CPU per rank: two ranks do not fit on one 1-CPU worker host, so they sit on both.
DDP = """\
name: ddp-hosts
workload: sl.linear
data: {{path: {data}}}
config: {{lr: 0.05, batch_size: 128, init_std: 0.01, optimizer: sgd}}
resources: {{cpus_per_trial: 0.6, workers: 2}}
stop: {{iterations: 2}}
checkpoint: {{every: 1}}
tracking: {{experiment: hosts-ddp}}
"""


@pytest.fixture(scope="module")
def bucket(namespaced_hosts, tmp_path_factory):
    """A bucket on an S3 server that listens on the bridge's root-side address only (where
    the hosts reach the tracking server too)."""
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with s3_bucket(namespaced_hosts.cluster.network.root_address, "runyard-lab", log) as found:
        yield found


def secrets_of(bucket) -> list[str]:
    return [bucket.env["AWS_ACCESS_KEY_ID"], bucket.env["AWS_SECRET_ACCESS_KEY"]]


def assert_no_secret_in(runs, texts: list[str], bucket) -> None:
    for secret in secrets_of(bucket):
        for run in runs:
            recorded = [*run.data.params.values(), *run.data.tags.values()]
            assert not [value for value in recorded if secret in value], run.info.run_name
        assert not [text for text in texts if secret in text]


def test_a_sweep_on_worker_hosts_keeps_its_state_in_a_bucket(namespaced_hosts, bucket, tmp_path,
                                                             monkeypatch):
    from runyard.execute.payload import TrialPayload
    from runyard.ray_compat import experiment_trials

    hosts = namespaced_hosts
    storage = f"s3://{bucket.name}/lab"
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "sweep.yaml").write_text(SWEEP)
    job_id = f"s3-{hosts.cluster.cluster_id[:6]}"
    submitted = laptop(hosts, project, "submit", "jobs/sweep.yaml", "--id", job_id,
                       "--storage", storage, env=bucket.env)
    assert submitted.returncode == 0, submitted.stderr
    state, log = finished(hosts, job_id, timeout_s=300)
    assert state == "SUCCEEDED", log[-4000:]

    keys = bucket.keys("lab")
    assert f"lab/sweeps/{job_id}.json" in keys, keys
    for trial_id in ("t0000", "t0001"):
        assert any(key.startswith(f"lab/ray_results/{job_id}/{trial_id}/checkpoint_000002/")
                   for key in keys), (trial_id, keys)
    # Tune's record of each trial's last result, read back from the bucket, says where it ran.
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    where = {TrialPayload.of(trial["config"]).trial_id: runtime["last_result"]["hostname"]
             for trial, runtime in experiment_trials(f"{storage}/ray_results/{job_id}")}
    assert sorted(where) == ["t0000", "t0001"]
    assert set(where.values()) <= {node.name for node in hosts.cluster.nodes[1:]}, where

    runs = job_runs(hosts, monkeypatch, "hosts-s3", job_id)
    trials = [r for r in runs if r.data.tags["runyard.kind"] == "trial"]
    assert len(runs) == 3 and len(trials) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(hosts.cluster.tracking_uri)
    for trial in trials:  # the final checkpoint, which the driver read from the bucket
        assert "checkpoint" in {a.path for a in client.list_artifacts(trial.info.run_id)}

    # The laptop reads the job back from the bucket: its ledger, and Tune's state of it.
    reader = {ENV: storage, "COLUMNS": "200", **bucket.env,
              "MLFLOW_TRACKING_USERNAME": hosts.cluster.tracking_username,
              "MLFLOW_TRACKING_PASSWORD": hosts.tracking_password}
    best = run_cli("best", job_id, cwd=project, timeout=120, env=reader)
    assert best.returncode == 0, best.stderr
    assert f"{job_id}: best configs by mean score" in best.stdout
    explained = run_cli("explain", job_id, cwd=project, timeout=120, env=reader)
    assert explained.returncode == 0, explained.stderr
    assert f"{job_id}: 2 TERMINATED" in explained.stdout
    status = laptop(hosts, project, "status", job_id)
    assert status.returncode == 0, status.stderr
    assert bucket.endpoint in status.stdout  # the job's env, its secrets redacted
    assert_no_secret_in(runs, [log, submitted.stdout, submitted.stderr, best.stdout, best.stderr,
                               explained.stdout, explained.stderr, status.stdout, status.stderr],
                        bucket)


def test_a_data_parallel_trial_has_its_ranks_on_two_hosts_and_matches_one_process(
        namespaced_hosts, bucket, tmp_path, monkeypatch):
    from runyard import workloads
    from runyard.spec import load_spec, workload_context

    hosts = namespaced_hosts
    tree = write_synthetic_imagenet(tmp_path / "jpeg", classes=4, train_per_class=32,
                                    val_per_class=8, min_side=20, max_side=28, seed=0)
    shards = hosts.storage / f"shards-{tmp_path.name}"  # every host reads it at this path
    prepare_imagenet(tree, shards, size=16, workers=1, images_per_shard=64)
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    spec_path = project / "jobs" / "ddp.yaml"
    spec_path.write_text(DDP.format(data=shards))
    job_id = f"ddp-{hosts.cluster.cluster_id[:6]}"
    submitted = laptop(hosts, project, "submit", "jobs/ddp.yaml", "--id", job_id,
                       "--storage", f"s3://{bucket.name}/ddp", env=bucket.env)
    assert submitted.returncode == 0, submitted.stderr
    state, log = finished(hosts, job_id, timeout_s=300)
    assert state == "SUCCEEDED", log[-4000:]

    (run,) = job_runs(hosts, monkeypatch, "hosts-ddp", job_id)
    assert run.info.status == "FINISHED"
    client = MlflowClient(hosts.cluster.tracking_uri)
    ranks = json.loads(Path(client.download_artifacts(run.info.run_id, "ranks.json",
                                                      str(tmp_path))).read_text())
    # Two ranks, each on its own worker host (an earlier test may have replaced one).
    workers = {node.name for node in hosts.cluster.nodes[1:]}
    assert len(ranks) == 2 and len({rank["host"] for rank in ranks}) == 2, ranks
    assert {rank["host"] for rank in ranks} <= workers, ranks
    assert len({rank["node_id"] for rank in ranks}) == 2
    assert {"checkpoint", "templates.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert any(key.startswith("ddp/ray_results/") for key in bucket.keys("ddp"))

    # The same config in one plain process (no Ray, no DDP): one global batch of the whole
    # training set, split over the ranks with gradients averaged, is the same update.
    spec = load_spec(spec_path)
    cls = workloads.get(spec.workload)
    one = cls()
    one.setup(cls.Config.model_validate(spec.config), workload_context(spec, workdir=tmp_path))
    alone = [one.step()["train_loss"] for _ in range(2)]
    one.close()
    history = sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(alone, rel=1e-4)
    assert_no_secret_in([run], [log, submitted.stdout, submitted.stderr], bucket)
