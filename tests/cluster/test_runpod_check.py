"""cluster/runpod.yaml passes Ray's validation; `check` refuses bad files naming the key."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.runpod import decode_pod_name, encode_pod_name
from cluster.runpod._check import ConfigError, check_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster" / "runpod.yaml"


@pytest.fixture
def config(tmp_path):
    """cluster/runpod.yaml with its key paths pointed at a fresh key pair."""
    key = tmp_path / "ray-runpod"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    loaded = yaml.safe_load(CLUSTER_YAML.read_text())
    loaded["auth"]["ssh_private_key"] = str(key)
    return loaded


def test_shipped_yaml_passes_rays_own_validation():
    loaded = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(loaded)
    prepared = prepare_config(copy.deepcopy(loaded))
    validate_config(prepared)
    assert prepared["provider"]["module"] == "cluster.runpod.RunPodNodeProvider"
    assert prepared["available_node_types"]["gpu_worker"]["min_workers"] == 0
    assert "RUNPOD_API_KEY" not in CLUSTER_YAML.read_text().replace("export RUNPOD_API_KEY", "")


def test_plan_lists_node_types_pods_and_costs(config):
    plan = check_config(config)
    text = plan.render()
    assert plan.max_pods == 5
    assert [n.name for n in plan.node_types] == ["head", "gpu_worker"]
    assert plan.idle_cost_per_hour == pytest.approx(0.25)
    assert plan.max_cost_per_hour == pytest.approx(0.25 + 4 * 0.69)
    assert "NVIDIA GeForce RTX 4090" in text and "$0.25/h" in text and "0-4" in text


def _set(config, dotted, value):
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value


_DELETE = object()
W = "available_node_types.gpu_worker"
BAD_FILES = [
    ("max_workers", "many", "max_workers"),
    ("bogus_setting", 1, "bogus_setting"),
    (f"{W}.node_config.gpu", _DELETE, f"{W}.node_config.gpu.id"),
    (f"{W}.node_config.gpu", {"id": "AMD Instinct MI300X OAM", "count": 1}, f"{W}.node_config.gpu.id"),
    (f"{W}.node_config.image", _DELETE, f"{W}.node_config.image"),
    (f"{W}.node_config.ports", ["8888/http"], f"{W}.node_config.ports"),
    (f"{W}.node_config.globalNetworking", False, f"{W}.node_config.globalNetworking"),
    (f"{W}.node_config.env", {"RUNPOD_API_KEY": "x"}, f"{W}.node_config.env.RUNPOD_API_KEY"),
    (f"{W}.resources", {"GPU": 1}, f"{W}.resources.CPU"),
    ("provider.module", "somewhere.Else", "provider.module"),
    ("auth.ssh_private_key", "/nonexistent/key", "auth.ssh_private_key"),
    ("setup_commands", ['pip install "ray[tune]==2.9.0"'], "setup_commands[0]"),
    ("setup_commands", ['pip install "ray[tune]==2.60.0"', "pip install -e ~/psann-sweeps"], "setup_commands[1]"),
    ("setup_commands", ['pip install "ray[tune]==2.60.0"', 'pip install -e "$HOME/psann-sweeps[sweeps]"'],
     "setup_commands[1]"),
    ("head_start_ray_commands", ["ray start --head"], "head_start_ray_commands"),
]


@pytest.mark.parametrize("dotted,value,key_path", BAD_FILES, ids=[b[2] + ":" + b[0] for b in BAD_FILES])
def test_check_refuses_bad_files_naming_the_key(config, dotted, value, key_path):
    _set(config, dotted, value)
    with pytest.raises(ConfigError) as info:
        check_config(config)
    assert key_path in str(info.value)


def _run_check(path):
    env = {k: v for k, v in os.environ.items() if k != "RUNPOD_API_KEY"}
    return subprocess.run([sys.executable, "-m", "cluster.runpod", "check", str(path)],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env=env)


def test_cli_prints_the_plan_and_exits_0(config, tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run_check(path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "gpu_worker" in result.stdout and "$/h" in result.stdout
    assert "RUNPOD_API_KEY is not set" in result.stdout  # the test env has no key


def test_cli_exits_2_with_the_key_path(config, tmp_path):
    config["available_node_types"]["gpu_worker"]["node_config"]["ports"] = ["8888/http"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run_check(path)
    assert result.returncode == 2
    assert "available_node_types.gpu_worker.node_config.ports" in result.stderr
    missing = _run_check(tmp_path / "missing.yaml")
    assert missing.returncode == 2 and "no such cluster file" in missing.stderr


def test_yaml_pins_the_drivers_ray_version():
    assert f"ray[tune]=={ray.__version__}" in CLUSTER_YAML.read_text()


_tag_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(tags=st.dictionaries(_tag_text, _tag_text, max_size=8), token=st.text(max_size=12))
def test_tags_round_trip_through_the_pod_name(tags, token):
    name = encode_pod_name(tags, token)
    assert decode_pod_name(name) == (tags, token)


@given(name=st.text(max_size=80))
def test_foreign_pod_names_decode_to_none_or_a_string_dict(name):
    decoded = decode_pod_name(name)
    assert decoded is None or all(isinstance(v, str) for v in decoded[0].values())


def test_a_tag_named_like_the_create_token_is_kept_apart_from_the_token():
    # Found by the round-trip property test: tags and the create token once shared one namespace.
    for tags, token in (({"_create_token": ""}, ""), ({"k": "x", "t": "y"}, "tok")):
        assert decode_pod_name(encode_pod_name(tags, token)) == (tags, token)


def test_a_file_that_does_not_install_the_project_is_warned_about(config):
    _set(config, "setup_commands", ['pip install "ray[tune]==2.60.0"'])
    plan = check_config(config)
    assert any("no setup command installs psann-sweeps" in w for w in plan.warnings)
