"""Contract tests of the node provider and its command runner against the fake API."""

from __future__ import annotations

import logging
import time

import pytest
from fake_runpod import Fault
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    TAG_RAY_CLUSTER_NAME,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from cluster.runpod import RunPodAPIError, RunPodNodeProvider, RunPodTransportError, decode_pod_name

NODE_CONFIG = {
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "gpu": {"id": "NVIDIA RTX A4000", "count": 1},
    "disk": 30,
    "ports": ["8265/http"],
    "cloud": "SECURE",
    "estimated_cost_per_hour": 0.25,
}
HEAD_TAGS = {TAG_RAY_NODE_KIND: NODE_KIND_HEAD, TAG_RAY_USER_NODE_TYPE: "head"}
WORKER_TAGS = {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: "gpu_worker"}


def make_provider(cluster_name="psann-test", **extra):
    config = {"type": "external", "module": "cluster.runpod.RunPodNodeProvider",
              "ssh_public_key": "ssh-ed25519 AAAATESTKEY test@psann", "cache_refresh_s": 0.1}
    config.update(extra)
    return RunPodNodeProvider(config, cluster_name)


def wait_until(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_create_list_tag_terminate_round_trip(fake_api, api_key):
    provider = make_provider()
    head = list(provider.create_node(NODE_CONFIG, HEAD_TAGS, 1))[0]
    workers = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 2))
    assert len(workers) == 2

    assert sorted(provider.non_terminated_nodes({})) == sorted([head] + workers)
    assert provider.non_terminated_nodes({TAG_RAY_NODE_KIND: NODE_KIND_HEAD}) == [head]
    assert sorted(provider.non_terminated_nodes({TAG_RAY_USER_NODE_TYPE: "gpu_worker"})) == sorted(workers)
    assert provider.node_tags(head)[TAG_RAY_CLUSTER_NAME] == "psann-test"

    provider.set_node_tags(workers[0], {TAG_RAY_NODE_STATUS: "up-to-date"})
    assert provider.node_tags(workers[0])[TAG_RAY_NODE_STATUS] == "up-to-date"
    # A second provider (a restarted head, a second `ray up`) reads the same tags.
    other = make_provider()
    assert other.non_terminated_nodes({TAG_RAY_NODE_STATUS: "up-to-date"}) == [workers[0]]
    assert other.node_tags(workers[0]) == provider.node_tags(workers[0])

    provider.terminate_nodes(workers)
    assert provider.non_terminated_nodes({}) == [head]
    assert provider.is_terminated(workers[0]) and not provider.is_running(workers[0])
    provider.terminate_node(head)
    assert provider.non_terminated_nodes({}) == []
    assert fake_api.pod_ids() == []
    assert len(fake_api.calls("DELETE")) == 3


def test_create_body_follows_the_v2_schema_and_carries_keys(fake_api, api_key):
    provider = make_provider()
    head = list(provider.create_node(NODE_CONFIG, HEAD_TAGS, 1))[0]
    worker = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 1))[0]
    head_body, worker_body = [r.body for r in fake_api.calls("POST")]
    for body in (head_body, worker_body):
        assert "estimated_cost_per_hour" not in body
        assert body["globalNetworking"] is True
        assert "22/tcp" in body["ports"] and "8265/http" in body["ports"]
        assert body["env"]["PUBLIC_KEY"] == "ssh-ed25519 AAAATESTKEY test@psann"
        assert body["gpu"] == {"id": "NVIDIA RTX A4000", "count": 1}
    # only the head gets the API key, for its autoscaler
    assert head_body["env"]["RUNPOD_API_KEY"] == api_key
    assert head_body["env"]["RUNPOD_API_URL"] == fake_api.url
    assert "RUNPOD_API_KEY" not in worker_body["env"]
    assert decode_pod_name(fake_api.pod_json(worker)["name"])[0][TAG_RAY_NODE_KIND] == "worker"
    assert head != worker


def test_addresses_appear_only_once_the_pod_runs(fake_api):
    fake_api.ssh_port = 2222
    provider = make_provider()
    pod = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 1))[0]
    assert provider.is_running(pod) is False
    assert provider.external_ip(pod) is None and provider.external_ssh_port(pod) is None
    wait_until(lambda: provider.is_running(pod))
    assert provider.external_ip(pod) == "127.0.0.1"
    assert provider.external_ssh_port(pod) == 2222
    assert provider.internal_ip(pod) == "127.0.0.2"


def test_other_clusters_and_foreign_pods_are_ignored(fake_api, client):
    mine, theirs = make_provider("mine"), make_provider("theirs")
    my_pod = list(mine.create_node(NODE_CONFIG, WORKER_TAGS, 1))[0]
    theirs.create_node(NODE_CONFIG, WORKER_TAGS, 1)
    client.create_pod({"name": "someone's notebook", "image": "x", "gpu": {"id": "NVIDIA A40"}})
    assert mine.non_terminated_nodes({}) == [my_pod]
    assert len(fake_api.pod_ids()) == 3


def test_a_pod_that_never_starts_is_reported_and_terminated(fake_api, caplog):
    caplog.set_level(logging.WARNING)
    provider = make_provider(pod_start_timeout_s=0.5)
    fake_api.never_start_next(1)
    stuck = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 1))[0]
    assert provider.non_terminated_nodes({}) == [stuck]
    time.sleep(0.7)
    assert provider.non_terminated_nodes({}) == []
    assert fake_api.pod_ids() == [] and stuck in fake_api.deleted
    assert any(stuck in r.getMessage() and "PROVISIONING" in r.getMessage() for r in caplog.records)


def test_a_create_without_an_answer_does_not_leak_a_pod(fake_api, caplog):
    caplog.set_level(logging.WARNING)
    provider = make_provider()
    provider.client.timeout = (2.0, 0.5)
    fake_api.inject(Fault(delay_s=1.0, method="POST", then_process=True))
    with pytest.raises(RunPodTransportError):
        provider.create_node(NODE_CONFIG, WORKER_TAGS, 1)
    assert len(fake_api.calls("POST")) == 1  # not retried: no duplicate pod
    wait_until(lambda: fake_api.pod_ids() != [])  # RunPod completes it after our timeout
    late_pod = fake_api.pod_ids()[0]
    assert provider.non_terminated_nodes({}) == []
    assert fake_api.pod_ids() == [] and late_pod in fake_api.deleted
    assert any(late_pod in r.getMessage() for r in caplog.records)


def test_capacity_errors_surface_with_runpods_message(fake_api):
    provider = make_provider()
    config = dict(NODE_CONFIG, gpu={"id": "AMD Instinct MI300X OAM", "count": 1})
    with pytest.raises(RunPodAPIError) as info:
        provider.create_node(config, WORKER_TAGS, 1)
    assert info.value.status == 400 and "createPod" in str(info.value)
    assert "global networking requires an NVIDIA GPU" in str(info.value)
    assert fake_api.pod_ids() == []


def test_polling_a_running_cluster_costs_one_list_call(fake_api):
    provider = make_provider()
    pods = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 3))
    wait_until(lambda: all(provider.is_running(p) for p in pods))
    before = len(fake_api.requests)
    for _ in range(3):  # what the autoscaler does every 5 s
        for pod in provider.non_terminated_nodes({}):
            provider.node_tags(pod)
            provider.is_running(pod)
            provider.internal_ip(pod)
    assert len(fake_api.requests) - before == 3


class _CapturingRunner:
    """Stands in for the subprocess module; records the commands instead of running them."""

    def __init__(self):
        self.commands = []

    def check_output(self, command, **kwargs):
        self.commands.append(command)
        return b""


def test_command_runner_uses_the_mapped_port_outside_and_22_inside(fake_api):
    fake_api.ssh_port = 31022
    provider = make_provider(internal_ssh_port=22)
    pod = list(provider.create_node(NODE_CONFIG, WORKER_TAGS, 1))[0]
    wait_until(lambda: provider.is_running(pod))
    auth = {"ssh_user": "root", "ssh_private_key": "/tmp/none.pem"}
    outside, inside = _CapturingRunner(), _CapturingRunner()
    provider.get_command_runner("t: ", pod, auth, "psann-test", outside, False).run(
        "echo hi", with_output=True)
    provider.get_command_runner("t: ", pod, auth, "psann-test", inside, True).run(
        "echo hi", with_output=True)
    outer, inner = " ".join(outside.commands[0]), " ".join(inside.commands[0])
    assert "Port=31022" in outer and "root@127.0.0.1" in outer
    assert "Port=22" in inner and "root@127.0.0.2" in inner
    assert f"RUNPOD_POD_ID={pod}" in outer and "RUNPOD_PRIVATE_IP=127.0.0.2" in outer


def test_docker_sections_are_refused():
    provider = make_provider()
    with pytest.raises(ValueError, match="docker"):
        provider.get_command_runner("t", "x", {"ssh_user": "root"}, "c", None, False,
                                    {"container_name": "ray", "image": "x"})


def test_bootstrap_config_stores_the_public_key_text(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("PRIVATE")
    (tmp_path / "id_ed25519.pub").write_text("ssh-ed25519 AAAAPUB me\n")
    config = {"provider": {"type": "external"}, "auth": {"ssh_private_key": str(key)}}
    out = RunPodNodeProvider.bootstrap_config(config)
    assert out["provider"]["ssh_public_key"] == "ssh-ed25519 AAAAPUB me"
    # on the head, the text is kept although the .pub file is not there
    (tmp_path / "id_ed25519.pub").unlink()
    assert RunPodNodeProvider.bootstrap_config(out)["provider"]["ssh_public_key"] == "ssh-ed25519 AAAAPUB me"
    with pytest.raises(FileNotFoundError, match="ssh_public_key_path"):
        RunPodNodeProvider.bootstrap_config(config)


def test_api_key_stays_out_of_provider_logs(fake_api, api_key, all_logs):
    provider = make_provider()
    head = list(provider.create_node(NODE_CONFIG, HEAD_TAGS, 1))[0]
    fake_api.inject(Fault(status=503, times=2))
    provider.non_terminated_nodes({})
    provider.set_node_tags(head, {TAG_RAY_NODE_STATUS: "setting-up"})
    provider.terminate_node(head)
    assert all_logs.records
    assert api_key not in all_logs.text
    assert api_key not in repr(provider) and api_key not in repr(provider.client)
