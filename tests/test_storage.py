"""A job's storage: where its ledger and Tune state live, chosen by --storage, RUNYARD_STORAGE
or the default .runyard/, read and written through pyarrow's filesystem layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runyard.errors import UserError
from runyard.execute.ledger import Ledger, Segment
from runyard.execute.storage import ENV, Storage, check_writable, client_env
from runyard_testing import run_cli, s3_bucket, tracking_uri


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A bucket on a moto S3 server on this machine's loopback."""
    with s3_bucket("127.0.0.1", "lab", tmp_path_factory.mktemp("s3") / "moto.log") as found:
        yield found


@pytest.fixture
def s3_env(bucket, monkeypatch):
    """This process reaches `bucket` the way a node does: through the S3 client's environment."""
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    return bucket


def test_the_setting_comes_from_the_flag_then_the_environment_then_the_working_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV, raising=False)
    assert Storage.resolve(None, tmp_path).root == str(tmp_path.resolve() / ".runyard")
    monkeypatch.setenv(ENV, "s3://bucket/lab/")
    assert Storage.resolve(None, tmp_path) == Storage("s3://bucket/lab")
    assert Storage("s3://bucket/lab").tune_path("job-1") == "s3://bucket/lab/ray_results/job-1"
    assert Storage.resolve(str(tmp_path / "shared"), tmp_path).root == str(tmp_path / "shared")


def test_a_ledger_round_trips_and_is_found_by_id_or_run_id(tmp_path: Path):
    storage = Storage(str(tmp_path / "store"))
    ledger = Ledger("job-1", {"name": "x"}, "sqlite:///m.db", "x", str(tmp_path), storage.root,
                    run_id="abc123", segments=[Segment(storage.tune_path("job-1"), 0, 2)])
    ledger.save()
    assert storage.ledger_ids() == ["job-1"]
    assert Ledger.find(storage, "job-1") == ledger
    assert Ledger.find(storage, "abc123") == ledger
    assert not list((tmp_path / "store" / "sweeps").glob("*.tmp"))  # written whole, renamed
    with pytest.raises(UserError, match=r"no job 'nope' in .*store/sweeps \(recent: job-1\)"):
        Ledger.find(storage, "nope")


def test_a_bucket_keeps_ledgers_as_a_folder_does(s3_env, tmp_path: Path):
    storage = Storage.resolve(f"s3://{s3_env.name}/team/", tmp_path)
    check_writable(storage)
    ledger = Ledger("job-1", {"name": "x"}, "sqlite:///m.db", "x", str(tmp_path), storage.root,
                    run_id="abc123", segments=[Segment(storage.tune_path("job-1"), 0, 2)])
    ledger.save()
    assert s3_env.keys("team") == ["team/sweeps/job-1.json"]  # and no probe left behind
    assert storage.ledger_ids() == ["job-1"]
    assert Ledger.find(storage, "abc123") == ledger
    with pytest.raises(UserError, match=r"storage s3://no-such-bucket/x: cannot write here"):
        check_writable(Storage("s3://no-such-bucket/x"))


def test_a_job_in_a_bucket_runs_its_tune_experiment_there(s3_env, tmp_path: Path):
    from runyard.execute.payload import TrialPayload
    from runyard.execute.tune_runner import SearchSettings, TuneRunner
    from runyard.plan import expand
    from runyard.spec import load_spec

    (tmp_path / "toy.yaml").write_text(
        "name: toy\nworkload: toy.quadratic\nstop: {iterations: 1}\n"
        "sweep: {samples: 2, metric: score, space: {config.x: {uniform: [0.0, 1.0]}}}\n")
    spec = load_spec(tmp_path / "toy.yaml")
    tune_path = Storage(f"s3://{s3_env.name}/team").tune_path("toy-1")
    tuner = TuneRunner(spec, SearchSettings.of(spec, {"score": "max"}), tmp_path, []).new(
        tune_path, expand(spec))
    run_config = tuner._local_tuner.get_run_config()
    assert (run_config.storage_path, run_config.name) == (f"s3://{s3_env.name}/team/ray_results", "toy-1")
    payloads = tuner._local_tuner.param_space["trial"]["grid_search"]
    assert {TrialPayload.of({"trial": p}).storage for p in payloads} == {tune_path}


def test_a_data_parallel_trial_s_checkpoint_is_read_from_its_bucket(s3_env, tmp_path: Path):
    from runyard.execute.tracking_callback import local_copy, stored_checkpoint

    storage = f"s3://{s3_env.name}/team/ray_results/job-1"
    # Ray Train reports the path inside the storage's filesystem, without the scheme.
    reported = f"{s3_env.name}/team/ray_results/job-1/t0000/t0000-ddp/checkpoint_000001"
    with s3_env.filesystem().open_output_stream(f"{reported}/state/weights.txt") as out:
        out.write(b"trained")
    path, scratch = local_copy(stored_checkpoint(storage, reported))
    try:
        assert (Path(path) / "state" / "weights.txt").read_text() == "trained"
    finally:
        shutil.rmtree(scratch)


def test_credentials_in_a_storage_uri_are_refused_without_repeating_them(workdir: Path):
    uri = "s3://AKIAEXAMPLE:s3cr3t-value@bucket/lab"
    with pytest.raises(UserError, match="AWS_SECRET_ACCESS_KEY") as refused:
        Storage.resolve(uri, workdir)
    assert "s3cr3t-value" not in str(refused.value) and "AKIAEXAMPLE" not in str(refused.value)
    # Nor does it travel to a cluster, whose job list would show it (nothing listens there).
    (workdir / "toy.yaml").write_text("name: toy\nworkload: toy.quadratic\nstop: {iterations: 1}\n")
    submitted = run_cli("submit", "toy.yaml", "--storage", uri, "--address", "http://127.0.0.1:9",
                        cwd=workdir, timeout=120)
    assert submitted.returncode == 2, submitted.stdout + submitted.stderr
    assert "credentials in the URI" in submitted.stderr and "s3cr3t" not in submitted.stderr


def test_a_job_that_names_a_bucket_carries_this_environment_s_s3_settings(monkeypatch):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("AWS_PROFILE", "laptop-only")  # names a file the nodes do not have
    assert client_env("s3://lab/jobs") == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                                           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                                           "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    # A shared path, or the cluster's own storage: the nodes' own settings apply.
    assert client_env("/srv/runyard") == {} and client_env(None) == {}


def test_a_storage_that_cannot_be_written_is_refused_naming_it(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=r"storage .*a-file/state: cannot write here"):
        check_writable(Storage(str(blocker / "state")))


@pytest.mark.slow
def test_a_job_keeps_its_state_in_the_storage_it_was_given_and_resumes_from_there(
        workdir: Path):
    shared = workdir / "shared-disk"
    (workdir / "toy.yaml").write_text(
        "name: stored\nworkload: toy.quadratic\nstop: {iterations: 3}\ncheckpoint: {every: 1}\n"
        "sweep: {samples: 2, metric: score, space: {config.x: {uniform: [0.0, 1.0]}}}\n")
    first = run_cli("run", "toy.yaml", "--id", "stored", "--num-cpus", "2", "--storage",
                    str(shared), cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (shared / "sweeps" / "stored.json").is_file()
    assert list((shared / "ray_results" / "stored").glob("t0000/checkpoint_*"))
    assert not (workdir / ".runyard" / "sweeps").exists()
    assert not (workdir / ".runyard" / "ray_results").exists()

    # The job is found where it lives: with the flag, or with the environment variable.
    missing = run_cli("best", "stored", cwd=workdir)
    assert missing.returncode == 2 and "no job 'stored'" in missing.stderr
    best = run_cli("best", "stored", cwd=workdir, env={ENV: str(shared)})
    assert best.returncode == 0, best.stderr
    explained = run_cli("explain", "stored", "--storage", str(shared), cwd=workdir)
    assert explained.returncode == 0 and "stored: 2 TERMINATED" in explained.stdout, explained.stderr
    promoted = run_cli("promote", "stored", "--to", "best.yaml", "--storage", str(shared), cwd=workdir)
    assert promoted.returncode == 0 and (workdir / "best.yaml").is_file(), promoted.stderr
    again = run_cli("resume", "stored", "--storage", str(shared), "--num-cpus", "2", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    client = MlflowClient(tracking_uri(workdir))
    parent = client.get_run(Ledger.find(Storage(str(shared)), "stored").run_id)
    assert parent.info.status == "FINISHED"
