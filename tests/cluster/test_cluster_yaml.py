"""cluster.yaml is a valid Ray cluster launcher config and keeps the cluster closed.

Validated the way `ray up` does it before touching AWS: prepare_config (merge with the AWS
defaults) then validate_config (ray/autoscaler/ray-schema.json + Ray's own checks).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
FORWARDED_ONLY_PORTS = {8265, 5000, 6379, 8080}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_schema_and_checks(config):
    prepared = prepare_config(config)
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_an_invalid_change_is_caught_by_the_same_validation(config):
    # Proves the check above can fail: Ray's schema wants integer resource amounts.
    broken = yaml.safe_load(CLUSTER_YAML.read_text())
    broken["available_node_types"]["trial_1gpu"]["resources"] = {"gpu_node": "one"}
    with pytest.raises(Exception, match="gpu_node|one"):
        validate_config(prepare_config(broken))


def test_node_types_cover_training_trials_and_rollouts(config):
    types = config["available_node_types"]
    assert types["train_8gpu"]["node_config"]["InstanceType"] == "p4d.24xlarge"  # 8 GPUs
    assert types["trial_1gpu"]["resources"]["gpu_node"] == 1  # same name as the local cluster
    assert "rollout_node" in types["rollout_cpu"]["resources"]
    for name, node_type in types.items():
        if name != config["head_node_type"]:
            assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]


def test_token_auth_on_every_node_and_dashboard_on_localhost(config):
    head, workers = " ".join(config["head_start_ray_commands"]), " ".join(config["worker_start_ray_commands"])
    for commands in (head, workers):
        assert "RAY_AUTH_MODE=token" in commands and "RAY_AUTH_TOKEN_PATH" in commands
    assert "--dashboard-host=127.0.0.1" in head
    assert "--host 127.0.0.1" in head and "tracking serve" in head
    assert "/home/ubuntu/.ray/auth_token" in config["file_mounts"]
    assert any("chmod 600 ~/.ray/auth_token" in command for command in config["setup_commands"])


def test_no_service_port_is_opened_to_the_internet(config):
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        assert not ports & FORWARDED_ONLY_PORTS, rule
    assert not re.search(r"dashboard-host=0\.0\.0\.0|--host 0\.0\.0\.0", CLUSTER_YAML.read_text())


def test_tracking_server_uses_postgres_s3_and_no_password_on_a_command_line(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "RUNYARD_TRACKING_BACKEND=\"postgresql://" in head and "--backend" not in head
    assert "--artifacts s3://" in head
    assert any("install -y postgresql" in command for command in config["head_setup_commands"])
