"""`down` stops exactly what `up` started, and `up` refuses bad input before starting anything."""

from __future__ import annotations

import pytest

from runyard.errors import UserError
from runyard.launch import local_cluster


def test_down_without_a_cluster_is_a_user_error(tmp_path):
    # That `down` leaves no process behind is checked when the session cluster is torn down
    # (conftest.local_ray_cluster), on the full 3-node + MLflow cluster.
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
