"""`runyard cluster local up --hosts N --slurm`: a real Slurm (slurmctld and munged on this
machine, the login node; a munged and a slurmd on each namespaced host) that jobs reach with
srun and sbatch through the SLURM_CONF it prints.

The slow tests share one cluster of two hosts (conftest.local_slurm, which also checks that
`down` leaves nothing behind); they are skipped, with the reason, where it cannot be made
(not root, Slurm not installed: `make system-deps`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from runyard_testing import RUNYARD, local_slurm_unavailable, namespaced_hosts_unavailable

from runyard.errors import UserError
from runyard.launch import local_cluster, slurm_hosts


# ---------------------------------------------------------------- refused before anything is made


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--slurm"], "--slurm: give --hosts N"),
        (["--hosts", "2", "--slurm", "--resources", '{"gpu_node": 1}'], "Ray node options"),
        (["--hosts", "2", "--slurm", "--workers", "1"], "give one"),
    ],
)
def test_slurm_cli_refuses_bad_arguments_before_making_anything(tmp_path, arguments, message):
    if "--hosts" in arguments and "--workers" in arguments and namespaced_hosts_unavailable():
        pytest.skip(namespaced_hosts_unavailable())
    completed = subprocess.run([str(RUNYARD), "cluster", "local", "up", *arguments, "--state-dir", str(tmp_path)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_slurm_without_the_daemons_says_how_to_install_them(tmp_path, monkeypatch):
    reason = namespaced_hosts_unavailable()
    if reason:
        pytest.skip(reason)
    which = shutil.which
    monkeypatch.setattr(slurm_hosts.shutil, "which", lambda name: None if name == "slurmctld" else which(name))
    with pytest.raises(UserError, match=r"--slurm: slurmctld not found.*make system-deps"):
        local_cluster.up(hosts=2, slurm=True, state_dir=tmp_path, echo=lambda _: None)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


# ---------------------------------------------------------------- on the cluster


@pytest.mark.slow
def test_srun_runs_a_step_on_each_host(local_slurm):
    # Each task prints its host and network namespace: two machines, neither of them this one.
    step = local_slurm.slurm("srun", "--nodes", "2", "--ntasks-per-node", "1", "sh", "-c",
                             "echo $(hostname) $(readlink /proc/self/ns/net)")
    assert step.returncode == 0, step.stderr
    seen = dict(line.split() for line in step.stdout.splitlines())
    assert sorted(seen) == ["n1", "n2"]
    assert len({*seen.values(), os.readlink("/proc/self/ns/net")}) == 3
    assert "n1 " in local_slurm.up_output and "SLURM_CONF=" in local_slurm.up_output


@pytest.mark.slow
def test_sbatch_runs_a_script_on_the_hosts_with_the_storage_shared(local_slurm, tmp_path):
    storage = local_slurm.storage
    marker = f"sbatch-{local_slurm.cluster.cluster_id}"
    script = storage / f"{marker}.sh"
    # The batch script runs on the first node; its step on both. Each writes into the shared
    # storage and into its own /tmp.
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        #SBATCH --nodes=2
        #SBATCH --output={storage}/{marker}-%j.out
        echo "batch on $(hostname)"
        srun --ntasks-per-node=1 sh -c 'hostname > {storage}/{marker}-step-$(hostname); touch /tmp/{marker}'
        """))
    submitted = local_slurm.slurm("sbatch", "--parsable", "--wait", str(script))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    output = (storage / f"{marker}-{job_id}.out").read_text()
    assert output.splitlines()[0] == "batch on n1", output
    assert sorted(p.read_text().strip() for p in storage.glob(f"{marker}-step-*")) == ["n1", "n2"]
    # /tmp is each host's own: nothing reached this machine's.
    assert not Path(f"/tmp/{marker}").exists()
    # The job is done and Slurm calls both hosts usable again.
    status = subprocess.run([str(RUNYARD), "cluster", "local", "status", "--state-dir", local_slurm.cluster.state_dir],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "nodes alive: 3 of 3" in status.stdout and "SLURM_CONF=" in status.stdout
