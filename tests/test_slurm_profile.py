"""What a `--slurm` job asks Slurm for, without a cluster: the flags and the profile file
(`--slurm-profile`, or the user's ~/.config/runyard/slurm.yaml) that supplies their defaults,
the #SBATCH lines they become, and the clear refusal of a bad profile before anything is
submitted. (The jobs themselves run in tests/cluster/test_cluster_slurm.py.)"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from runyard_testing import RUNYARD, toy_sweep

from runyard.cli.common import SLURM_FLAGS
from runyard.errors import UserError
from runyard.launch import slurm_profile
from runyard.launch.slurm import Driver, SlurmOptions, batch_script


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def directives(options: SlurmOptions) -> list[str]:
    driver = Driver(start=["python", "-m", "runyard.cli.main", "run", "jobs/x.yaml"],
                    resume=["python", "-m", "runyard.cli.main", "resume", "x"], ledger="/shared/sweeps/x.json")
    script = batch_script(Path("/shared/slurm-jobs/x"), "x", driver, options)
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_every_flag_becomes_its_sbatch_line_and_the_job_asks_for_its_wall_time_signal():
    asked = directives(SlurmOptions(nodes=2, partition="gpu", account="lab42", qos="long", time="04:00:00",
                                    gpus_per_node="a100:2", cpus_per_node=8, mem="64G", stop_lead_s=300))
    for line in ("--nodes=2", "--partition=gpu", "--account=lab42", "--qos=long", "--time=04:00:00",
                 "--gpus-per-node=a100:2", "--cpus-per-task=8", "--mem=64G",
                 # SIGUSR1 to the batch shell alone, 300 s before the end; requeued to continue,
                 # its output appended to across allocations.
                 "--signal=B:USR1@300", "--requeue", "--open-mode=append"):
        assert line in asked, (line, asked)
    # Nothing asked: Slurm's (the partition's) defaults, and the default lead.
    plain = directives(SlurmOptions(nodes=1))
    assert not [line for line in plain if line.split("=")[0] in ("--partition", "--account", "--qos", "--time",
                                                                  "--gpus-per-node", "--mem", "--cpus-per-task")]
    assert "--signal=B:USR1@120" in plain


def test_a_profile_supplies_the_defaults_and_the_command_line_wins(tmp_path, monkeypatch):
    profile = write(tmp_path / "lab.yaml", """\
        nodes: 4
        partition: gpu
        account: lab42
        qos: normal
        time: 01:30:00
        gpus-per-node: 2
        cpus-per-node: 16
        mem: 64G
        stop-lead: 300
        setup: |
          module load cuda
          source ~/venv/bin/activate
        """)
    options = slurm_profile.options(profile, {"partition": "debug", "nodes": 2})
    # 01:30:00 stays Slurm's time, not YAML's 5400 (a base-60 number).
    assert options == SlurmOptions(nodes=2, partition="debug", account="lab42", qos="normal", time="01:30:00",
                                   gpus_per_node="2", cpus_per_node=16, mem="64G",
                                   setup="module load cuda\nsource ~/venv/bin/activate\n", stop_lead_s=300)
    # The user's default profile, in their config directory, when no --slurm-profile is given.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert slurm_profile.options(None, {}) == SlurmOptions(nodes=1)
    (tmp_path / "config" / "runyard").mkdir(parents=True)
    write(tmp_path / "config" / "runyard" / "slurm.yaml", "account: lab7\n")
    assert slurm_profile.default_path() == tmp_path / "config" / "runyard" / "slurm.yaml"
    assert slurm_profile.options(None, {"qos": "high"}) == SlurmOptions(nodes=1, account="lab7", qos="high")


@pytest.mark.parametrize("text,message", [
    ("gpus_per_node: 2\n", r"unknown field 'gpus_per_node'; did you mean 'gpus-per-node'\?"),
    ("nodes: two\n", r"field 'nodes' is 'two'; expected a whole number \(e.g. `nodes: 2`\)"),
    ("setup: [a, b]\n", r"field 'setup' is a list; expected a single value"),
    ("mem: lots\n", r"field 'mem': --mem: 'lots'; expected memory per node"),
    ("nodes: 0\n", r"field 'nodes': --nodes: 0; expected a whole number >= 1"),
    ("partition: two words\n", r"field 'partition': --partition: 'two words'; expected one word"),
    ("- partition\n", r"expected a mapping of field: value"),
    ("partition: [gpu\n", r"not valid YAML"),
])
def test_a_bad_profile_is_refused_naming_the_file_and_the_field(tmp_path, text, message):
    profile = write(tmp_path / "slurm.yaml", text)
    with pytest.raises(UserError, match=rf"^{profile}: .*{message}"):
        slurm_profile.options(profile, {})


def test_flags_profile_and_options_name_the_same_fields():
    fields = {field.name for field in dataclasses.fields(SlurmOptions)}
    assert {field for field, _, _ in slurm_profile.FIELDS.values()} == set(SLURM_FLAGS) == fields


def test_submit_with_a_bad_or_missing_profile_submits_nothing(tmp_path):
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "toy.yaml").write_text(toy_sweep("profiled", "profiled", 0.0, 1))
    bad = write(tmp_path / "bad.yaml", "acount: lab42\n")
    env = {key: value for key, value in os.environ.items() if key != "RUNYARD_STORAGE"}
    storage = tmp_path / "storage"
    for profile, message in ((bad, f"{bad}: unknown field 'acount'; did you mean 'account'?"),
                             (tmp_path / "missing.yaml", f"--slurm-profile: {tmp_path / 'missing.yaml'} does not exist")):
        completed = subprocess.run([str(RUNYARD), "submit", "jobs/toy.yaml", "--slurm", "--slurm-profile", str(profile),
                                    "--storage", str(storage)], cwd=project, env=env, capture_output=True,
                                   text=True, timeout=60)
        assert completed.returncode == 2 and message in completed.stderr, completed.stderr
    assert not storage.exists()


def test_a_trial_the_asked_nodes_cannot_hold_is_refused_before_anything_is_submitted(tmp_path):
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "big.yaml").write_text(
        "name: big\nworkload: toy.quadratic\nstop: {iterations: 1}\nresources: {cpus_per_trial: 4}\n")
    env = {key: value for key, value in os.environ.items() if key != "RUNYARD_STORAGE"}
    storage = tmp_path / "storage"
    completed = subprocess.run([str(RUNYARD), "submit", "jobs/big.yaml", "--slurm", "--nodes", "2",
                                "--cpus-per-node", "2", "--storage", str(storage)], cwd=project, env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "no node can hold it" in completed.stderr, completed.stderr
    assert "ask Slurm for more per node (now --nodes 2 --cpus-per-node 2 --gpus-per-node 0)" in completed.stderr
    assert not storage.exists()
    # What the check compares with: each node's Ray, as the flags fix it (and nothing without them).
    assert SlurmOptions(nodes=2, cpus_per_node=4, gpus_per_node="a100:2").ray_nodes() == \
        [{"CPU": 4.0, "GPU": 2.0}] * 2
    assert SlurmOptions(nodes=2).ray_nodes() is None


def test_the_readmes_example_profile_is_a_valid_one(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```yaml\n# ~/.config/runyard/slurm.yaml\n", 1)[1].split("```", 1)[0]
    options = slurm_profile.options(write(tmp_path / "slurm.yaml", block), {})
    assert (options.nodes, options.gpus_per_node, options.time, options.stop_lead_s) == (2, "a100:1", "04:00:00", 300)
    assert options.setup.splitlines()[0] == "module load cuda/12.4"
