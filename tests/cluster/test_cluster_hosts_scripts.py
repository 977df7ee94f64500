"""A researcher's unchanged script on hosts that share nothing: it logs with TensorBoard and
pins its own gymnasium, and the hosts have no package index — the wheel comes from the
cluster's shared storage (`--no-index --find-links`), as the README tells a lab to do."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from runyard_testing import finished, job_runs, laptop

SCRIPT = """\
import gymnasium
from tensorboardX import SummaryWriter
writer = SummaryWriter("runs/probe")
minor = int(gymnasium.__version__.split(".")[1])
for step in (10, 20, 30):
    writer.add_scalar("gym_minor", minor, step)
    writer.add_scalar("losses/loss", 1.0 / step, step)
writer.close()
"""


@pytest.mark.slow
def test_a_tensorboard_script_with_its_own_pins_runs_on_hosts_without_an_index(
        namespaced_hosts, tmp_path, monkeypatch):
    wheels = namespaced_hosts.storage / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-d", str(wheels), "gymnasium==0.29.1"],
                   check=True, timeout=300)
    project = tmp_path / "project"
    project.mkdir()
    (project / "probe.py").write_text(SCRIPT)
    (project / "requirements.txt").write_text(f"--no-index\n--find-links {wheels}\ngymnasium==0.29.1\n")
    (project / "job.yaml").write_text(textwrap.dedent("""\
        name: hosts-scripts
        workload: command
        environment: {requirements: requirements.txt}
        config:
          command: python probe.py
          reports: tensorboard
          metrics: {gym_minor: max}
        tracking: {experiment: hosts-scripts}
        """))
    job_id = f"scripts-{namespaced_hosts.cluster.cluster_id[:6]}"
    submit = laptop(namespaced_hosts, project, "submit", "job.yaml", "--id", job_id)
    assert submit.returncode == 0, submit.stderr
    assert "shipped the project: 3 files" in submit.stdout
    state, log = finished(namespaced_hosts, job_id, timeout_s=420)
    assert state == "SUCCEEDED", log[-4000:]
    [run] = job_runs(namespaced_hosts, monkeypatch, "hosts-scripts", job_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["gym_minor"] == 29  # the pinned gymnasium, on a worker host
    assert run.data.metrics["losses/loss"] == pytest.approx(1 / 30)
