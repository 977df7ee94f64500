"""`runyard explain` on a live sweep: a Ray head with 2 CPUs started here, a sweep of 5 one-CPU
trials running on it as a separate driver, 3 of them PENDING because the 2 running ones hold
every CPU — and explain has to say so, trial by trial."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runyard_testing import RUNYARD, run_cli
from runyard.launch.process_nodes import free_ports
from runyard.processes import stop_group

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")

BUSY_SWEEP = """\
name: busy
workload: toy.quadratic
config: {sleep_s: 1.0}
stop: {iterations: 40}
resources: {cpus_per_trial: 1}
tracking: {experiment: toy}
sweep:
  samples: 5
  metric: score
  max_concurrent: 5
  space:
    config.x: {uniform: [0.0, 1.0]}
"""


@pytest.fixture
def ray_head(tmp_path: Path):
    """A Ray head of 2 CPUs on its own ports, temp dir and token; torn down by its process
    group (never `ray stop`, which would end every Ray on the machine)."""
    gcs, client, metrics, agent_http, agent_grpc, runtime_env, manager, objects, *workers = \
        free_ports(8 + 16)
    token = tmp_path / "ray-token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_TRACKING_URI"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               COLUMNS="200")  # explain's table rows on one line each
    temp_dir = Path("/tmp") / f"ry-explain-{os.getpid()}"  # short: Ray's socket paths are limited
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--ray-client-server-port", str(client), "--num-cpus", "2",
         "--num-gpus", "0", "--include-dashboard", "false", "--temp-dir", str(temp_dir),
         "--disable-usage-stats", "--metrics-export-port", str(metrics),
         "--dashboard-agent-listen-port", str(agent_http),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
         "--node-manager-port", str(manager), "--object-manager-port", str(objects),
         "--worker-port-list", ",".join(map(str, workers)),
         "--object-store-memory", str(100 * 2**20)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "the Ray head did not come up"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", gcs)) == 0:
                    break
            time.sleep(0.5)
        yield f"127.0.0.1:{gcs}", env
    finally:
        stop_group(head.pid, 30, leader=head)
        subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def test_explain_says_pending_trials_wait_for_cpus_held_by_running_ones(workdir: Path, ray_head):
    address, env = ray_head
    spec = workdir / "busy.yaml"
    spec.write_text(BUSY_SWEEP)
    log = workdir / "driver.log"
    with open(log, "wb") as sink:
        driver = subprocess.Popen([str(RUNYARD), "run", str(spec), "--id", "busy", "--address",
                                   address], cwd=workdir, env=env, stdout=sink,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, out = time.monotonic() + 180, ""
        while True:
            assert driver.poll() is None, f"the sweep ended first:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"never saw 2 running trials:\n{out}"
            result = run_cli("explain", "busy", "--address", address, cwd=workdir, env=env)
            out = result.stdout + result.stderr
            if result.returncode == 0 and "2 RUNNING" in out and "3 PENDING" in out:
                break
            time.sleep(2)
        assert f"cluster {address}: 1 node(s)" in out
        assert "free {CPU=0" in out  # both CPUs held
        rows = [line for line in out.splitlines() if "resources busy by 2 running trial(s)" in line]
        assert len(rows) == 3, out
        assert all("CPU 0 of 2 free" in row and "{CPU=1}" in row for row in rows), out
        # Without the cluster's address, explain still reads Tune's state, and says why it
        # cannot show the cluster.
        local = run_cli("explain", "busy", cwd=workdir, env=env)
        assert local.returncode == 0 and "PENDING" in local.stdout
        assert "embedded Ray" in local.stdout
        # A driver that died (SIGKILL, a lost machine): explain says nothing runs, and how to go on.
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        gone = run_cli("explain", "busy", cwd=workdir, env=env)
        assert gone.returncode == 0 and "is gone" in gone.stdout, gone.stdout + gone.stderr
        assert "runyard resume busy" in gone.stdout
    finally:
        stop_group(driver.pid, 60, leader=driver)
