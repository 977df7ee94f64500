"""`down` stops exactly what `up` started, and `up` refuses bad input before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.errors import UserError
from runyard.launch import local_cluster
from runyard.tracking.server import processes_in_group


@pytest.mark.slow
def test_down_leaves_no_process_behind(tmp_path):
    cluster = local_cluster.up(workers=1, state_dir=tmp_path, with_tracking=False, echo=lambda _: None)
    groups = [node.pid for node in cluster.nodes]
    assert all(processes_in_group(pid) for pid in groups)
    assert len(local_cluster.processes_with_marker(cluster.cluster_id)) >= 6  # gcs, raylets, dashboard, agents...

    local_cluster.down(tmp_path, echo=lambda _: None)

    alive = [(pid, state) for group in groups for pid, state in processes_in_group(group) if state != "Z"]
    assert alive == []
    assert local_cluster.processes_with_marker(cluster.cluster_id) == []
    assert not Path(cluster.ray_temp_root).exists()
    assert not (tmp_path / local_cluster.STATE_FILE).exists()
    with pytest.raises(UserError, match="no local cluster"):
        local_cluster.down(tmp_path)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"workers": -1}, "--workers"),
        ({"resources": {"GPU": 1}}, "built-in resource"),
        ({"resources": {"gpu_node": 0}}, "positive"),
        ({"workers": 2, "resources": [{"gpu_node": 1}]}, "1 dicts for 2 workers"),
    ],
)
def test_up_refuses_bad_arguments_before_starting(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        local_cluster.up(state_dir=tmp_path, echo=lambda _: None, **kwargs)
    assert not (tmp_path / local_cluster.STATE_FILE).exists()


def test_up_refuses_a_second_cluster_in_the_same_state_dir(tmp_path):
    (tmp_path / local_cluster.STATE_FILE).write_text("{}")
    with pytest.raises(UserError, match="already recorded"):
        local_cluster.up(state_dir=tmp_path, echo=lambda _: None)
