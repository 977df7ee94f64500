"""The env, rollout, data and resources blocks are closed: every key that exists is typed and
documented (and named in the README's field reference), every other key is refused with its
line and the nearest key that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runyard_testing import JOBS, REPO
from runyard.spec import SpecError, load_spec
from runyard.workloads.base import WorkloadContext
from runyard.workloads.blocks import BLOCKS, DigitsData, EnvSpec, RolloutSpec, ShardsData
from runyard.workloads.reference import field_rows

RL = """\
name: blocks
workload: rl.pg
env: {id: CartPole-v1}
rollout: {workers: 1}
resources: {cpus_per_trial: 1}
stop: {iterations: 1}
"""


@pytest.mark.parametrize("override, line, message", [
    ("env.preproces=pong", 3, "env.preproces: unknown key 'preproces' (did you mean 'preprocess'?)"),
    ("rollout.cpu_per_worker=2", 4,
     "rollout.cpu_per_worker: unknown key 'cpu_per_worker' (did you mean 'cpus_per_worker'?)"),
    ("rollout.backend=threads", 4, "rollout.backend: expected 'ray', 'local' or 'processes'"),
    ("resources.gpus_per_trail=1", 5,
     "resources.gpus_per_trail: unknown key 'gpus_per_trail' (did you mean 'gpus_per_trial'?)"),
])
def test_an_unknown_rl_block_key_is_refused_at_its_line(tmp_path: Path, override: str, line: int,
                                                       message: str):
    spec = tmp_path / "blocks.yaml"
    # Written into the file, not --set, so the problem is reported at its line.
    key, value = override.split("=")
    block, field = key.split(".")
    spec.write_text(re.sub(rf"^{block}: {{", f"{block}: {{{field}: {value}, ", RL, flags=re.M))
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert f"blocks.yaml:{line}: {message}" in str(caught.value)


@pytest.mark.parametrize("data, message", [
    ("{source: digits, val_frac: 0.5}",
     "data.val_frac: unknown key 'val_frac' (did you mean 'val_fraction'?); expected one of for "
     "the digits dataset (data: {source: digits}): source, split_seed, val_fraction"),
    ("{path: data/x, shufle_buffer: 8}",
     "data.shufle_buffer: unknown key 'shufle_buffer' (did you mean 'shuffle_buffer'?); expected "
     "one of for a prepared dataset (data: {path: DIR}): path, resident, shuffle_buffer, val_batches"),
    ("{path: data/x, val_fraction: 0.1}", "data.val_fraction: unknown key 'val_fraction'"),
    ("{source: digits, val_fraction: 1.5}", "data.val_fraction: expected less than 1"),
])
def test_an_unknown_or_wrong_data_key_is_refused_at_its_line(tmp_path: Path, data: str, message: str):
    spec = tmp_path / "digits.yaml"
    spec.write_text((JOBS / "digits_linear.yaml").read_text().replace(
        "data: {source: digits, val_fraction: 0.2}", f"data: {data}"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert f"digits.yaml:6: {message}" in str(caught.value)


def test_a_block_the_workload_does_not_read_is_refused():
    with pytest.raises(SpecError, match=r"rollout: sl.linear does not read this block; remove it \(it reads data, resources"):
        load_spec(JOBS / "digits_linear.yaml", ["rollout.workers=2"])


def test_the_workload_sees_each_block_with_its_defaults():
    from runyard.spec import workload_context

    context = workload_context(load_spec(JOBS / "imagenet64_linear.yaml"))
    assert context.data == ShardsData(path="data/imagenet64", resident=True, shuffle_buffer=65536,
                                      val_batches=None)
    rollout = workload_context(load_spec(JOBS / "cartpole_pg.yaml")).rollout
    assert rollout == RolloutSpec(workers=1, envs_per_worker=8, backend="local", cpus_per_worker=1)
    # Plain data (a trial's payload, a test) becomes the same typed block, defaults filled in.
    assert WorkloadContext(data={"path": "data/imagenet64", "resident": True}).data == context.data
    assert WorkloadContext(data={}).data == DigitsData(source="digits", val_fraction=0.2, split_seed=0)


def test_an_ale_pong_env_gets_the_pong_preprocessing_unless_it_says_otherwise():
    # The default the env block documents: a spec that names only the id trains on the
    # 80x80 difference frames, as the seed does (not on full 210x160 RGB frames).
    assert EnvSpec(id="ALE/Pong-v5").preprocessing == "pong"
    assert EnvSpec(id="ALE/Breakout-v5").preprocessing is None
    assert EnvSpec(id="CartPole-v1").preprocessing is None
    assert WorkloadContext(env={"id": "ALE/Pong-v5"}).env.preprocessing == "pong"


def test_the_readme_field_reference_names_every_key_of_every_block():
    readme = (REPO / "README.md").read_text()
    reference = readme[readme.index("## Spec field reference"):]
    for block, models in BLOCKS.items():
        for model in models:
            for row in field_rows(model):
                assert f"`{block}.{row.key}`" in reference, f"{block}.{row.key} is not in the README"
