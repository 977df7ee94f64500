"""cluster.yaml is a valid Ray cluster launcher config and keeps the cluster closed.

Validated the way `ray up` does it before touching AWS: prepare_config (merge with the AWS
defaults) then validate_config (ray/autoscaler/ray-schema.json + Ray's own checks). The start
commands are read as a shell runs them: each `ray start` parsed by Ray's own command line,
the tracking server's by runyard's, with the variables exported before each.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

# Ray's command line imports Ray Serve's config models, which warn about Pydantic 1 idioms.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

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


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of one shell command line, split at ; && || | & and parentheses,
    each as the words the shell would pass (quotes removed, redirections and a leading
    `nohup` dropped)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    commands, current, words = [], [], iter(lexer)
    for word in words:
        if set(word) <= set(";&|()"):
            commands, current = commands + [current] if current else commands, []
        elif re.fullmatch(r"\d*(>>?|<)", word):
            if next(words, None) == "&":  # the redirection's target: a file, or &N
                next(words, None)
        elif not (word == "nohup" and not current):
            current.append(word)
    return commands + [current] if current else commands


@dataclass(frozen=True)
class Call:
    arguments: list[str]
    environment: dict[str, str]  # exported before it in the same command, or set on its line


def calls(commands: list[str], program: str, *subcommand: str) -> list[Call]:
    """Every call of `program subcommand...` in a list of the launcher's commands. Ray runs
    each list item in a shell of its own, so what one item exports reaches only its own calls."""
    found = []
    for command in commands:
        exported: dict[str, str] = {}
        for words in simple_commands(command):
            if words[0] == "export":
                exported.update(word.split("=", 1) for word in words[1:] if "=" in word)
                continue
            own = {}
            while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                own.update([words.pop(0).split("=", 1)])
            if words and Path(words[0]).name == program and words[1:1 + len(subcommand)] == list(subcommand):
                found.append(Call(words[1 + len(subcommand):], {**exported, **own}))
    return found


def ray_start(config: dict, key: str) -> tuple[Call, dict]:
    """The one `ray start` of a node type's start commands, with its options as Ray's own
    command line parses them."""
    from ray.scripts.scripts import start

    [call] = calls(config[key], "ray", "start")
    return call, start.make_context("ray start", list(call.arguments)).params


def tracking_serve(config: dict) -> tuple[Call, argparse.Namespace]:
    """The head's `runyard tracking serve`, parsed by runyard's own command line."""
    from runyard.cli.main import build_parser

    [call] = calls(config["head_start_ray_commands"], "runyard", "tracking", "serve")
    return call, build_parser().parse_args(["tracking", "serve", *call.arguments])


def test_the_command_parsing_reads_what_a_shell_would_run():
    [first, second] = calls(["export A=1 B=2 && X=3 ray start --head > log 2>&1; (ray stop) || true",
                             "nohup ray start --address=$HEAD:6379 &"], "ray", "start")
    assert first == Call(["--head"], {"A": "1", "B": "2", "X": "3"})
    assert second == Call(["--address=$HEAD:6379"], {})  # the first item's exports are gone


def test_token_auth_on_every_node_and_dashboard_on_localhost(config):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        call, options = ray_start(config, key)
        assert call.environment.get("RAY_AUTH_MODE") == "token", key
        assert call.environment.get("RAY_AUTH_TOKEN_PATH") == "$HOME/.ray/auth_token", key
        assert options["dashboard_host"] == "127.0.0.1", key
    assert ray_start(config, "head_start_ray_commands")[1]["head"]
    assert tracking_serve(config)[1].host == "127.0.0.1"
    assert "/home/ubuntu/.ray/auth_token" in config["file_mounts"]
    assert any(["chmod", "600", "~/.ray/auth_token"] == words[:3]
               for command in config["setup_commands"] for words in simple_commands(command))


def test_no_service_port_is_opened_to_the_internet(config):
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ports = set(range(rule.get("FromPort", 0), rule.get("ToPort", 65535) + 1))
        assert not ports & FORWARDED_ONLY_PORTS, rule


def test_tracking_server_uses_postgres_s3_and_no_password_on_a_command_line(config):
    call, options = tracking_serve(config)
    assert call.environment["RUNYARD_TRACKING_BACKEND"].startswith("postgresql://")
    assert options.backend is None  # the URI, password and all, only in the environment
    assert options.artifacts.startswith("s3://")
    assert any(words[:1] == ["sudo"] and "postgresql" in words
               for command in config["head_setup_commands"] for words in simple_commands(command))
