"""Jobs submitted through runyard's Jobs API client run on the real multi-node local cluster."""

from __future__ import annotations

import textwrap

import pytest

from runyard.errors import UserError
from runyard.launch import jobs_api

pytestmark = pytest.mark.slow

JOB = textwrap.dedent(
    """
    import os, sys
    import ray
    import mlflow

    ray.init()

    @ray.remote(num_cpus=0, resources={"gpu_node": 0.5}, scheduling_strategy="SPREAD")
    def node_of_task():
        import time
        time.sleep(0.2)
        return ray.get_runtime_context().get_node_id()

    nodes = set(ray.get([node_of_task.remote() for _ in range(8)]))
    print("gpu_node nodes used:", len(nodes))
    print("runyard state shipped:", os.path.exists(".runyard"))
    print("big file shipped:", os.path.exists("weights.bin"))
    print("code shipped:", os.path.exists("pkg/data/loader.py"))
    print("arg:", sys.argv[1], "env:", os.environ["RUN_LABEL"])

    mlflow.set_experiment("cluster-test")
    with mlflow.start_run(run_name=os.environ["RUN_LABEL"]) as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_metric("loss", 0.5, step=1)
    print("mlflow run:", run.info.run_id)
    """
)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "job.py").write_text(JOB)
    (tmp_path / ".runyard").mkdir()
    (tmp_path / ".runyard" / "state.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"\0" * (11 * 1024 * 1024))
    (tmp_path / "pkg" / "data").mkdir(parents=True)
    (tmp_path / "pkg" / "data" / "loader.py").write_text("# code under a folder named data\n")
    return tmp_path


def test_submitted_job_runs_on_worker_nodes_logs_and_tracks(local_ray_cluster, project, monkeypatch):
    cluster = local_ray_cluster.cluster
    submitted = jobs_api.submit(
        "python job.py first", cluster.jobs_address, project, {"RUN_LABEL": "from-test"}, state_dir=cluster.state_dir
    )
    assert submitted.shipped.large_files == ["weights.bin"]
    state = jobs_api.wait(submitted.job_id, cluster.jobs_address, timeout_s=180, state_dir=cluster.state_dir)
    log = "".join(jobs_api.logs(submitted.job_id, cluster.jobs_address, state_dir=cluster.state_dir))
    assert state == "SUCCEEDED", log
    assert "gpu_node nodes used: 2" in log  # both workers, and never the head (it has no gpu_node)
    assert "runyard state shipped: False" in log
    assert "big file shipped: False" in log
    assert "code shipped: True" in log
    assert "arg: first env: from-test" in log

    info = jobs_api.status(submitted.job_id, cluster.jobs_address, state_dir=cluster.state_dir)
    assert str(info.status.value) == "SUCCEEDED" and info.entrypoint == "python job.py first"
    assert submitted.job_id in [job.submission_id for job in jobs_api.list_jobs(cluster.jobs_address, state_dir=cluster.state_dir)]

    # The driver logged to the cluster's tracking server with credentials from the nodes' env.
    run_id = log.split("mlflow run:")[1].split()[0]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", cluster.tracking_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", local_ray_cluster.tracking_password)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(cluster.tracking_uri).get_run(run_id)
    assert run.data.params == {"lr": "0.01"} and run.data.metrics == {"loss": 0.5}


def test_follow_logs_then_stop_a_running_job(local_ray_cluster, tmp_path):
    cluster = local_ray_cluster.cluster
    (tmp_path / "tick.py").write_text("import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n")
    submitted = jobs_api.submit("python tick.py", cluster.jobs_address, tmp_path, state_dir=cluster.state_dir)
    seen = ""
    for chunk in jobs_api.logs(submitted.job_id, cluster.jobs_address, follow=True, state_dir=cluster.state_dir):
        seen += chunk
        if "tick 3" in seen:
            break
    assert jobs_api.stop(submitted.job_id, cluster.jobs_address, state_dir=cluster.state_dir) is True
    assert jobs_api.wait(submitted.job_id, cluster.jobs_address, timeout_s=60, state_dir=cluster.state_dir) == "STOPPED"


def test_unknown_job_is_a_user_error(local_ray_cluster):
    cluster = local_ray_cluster.cluster
    with pytest.raises(UserError, match="not known"):
        jobs_api.status("raysubmit_nope", cluster.jobs_address, state_dir=cluster.state_dir)


def test_bad_submissions_are_user_errors_before_anything_is_sent(tmp_path):
    with pytest.raises(UserError, match="entrypoint"):
        jobs_api.submit("  ", "http://127.0.0.1:1", tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        jobs_api.submit("python x.py", "http://127.0.0.1:1", tmp_path / "missing")
    with pytest.raises(UserError, match="not a Jobs API URL"):
        jobs_api.resolve_address("127.0.0.1:6379")
