"""Contract tests of the RunPod REST v2 client against the fake API."""

from __future__ import annotations

import time

import pytest
from fake_runpod import Fault

from cluster.runpod import (
    RetryPolicy,
    RunPodAPIError,
    RunPodAuthError,
    RunPodClient,
    RunPodNotFound,
    RunPodTransportError,
)

GPU_POD = {
    "name": "contract-test",
    "image": "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2404",
    "gpu": {"id": "NVIDIA RTX A4000", "count": 1},
    "disk": 20,
    "ports": ["22/tcp", "8265/http"],
    "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA test"},
    "globalNetworking": True,
    "cloud": "SECURE",
}


def _wait_for_status(client, pod_id, wanted, timeout_s=5.0):
    seen = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_pod(pod_id)["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == wanted:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"pod never reached {wanted}; saw {seen}")


def test_pod_lifecycle_create_list_update_delete(client, fake_api):
    pod = client.create_pod(dict(GPU_POD))
    assert pod["status"] == "PROVISIONING"
    assert pod["runtime"] is None and pod["ssh"]["direct"] is None
    assert [p["id"] for p in client.list_pods()] == [pod["id"]]

    seen = _wait_for_status(client, pod["id"], "RUNNING")
    assert seen[0] == "PROVISIONING" and seen[-1] == "RUNNING"
    running = client.get_pod(pod["id"])
    ssh_port = [p for p in running["runtime"]["ports"] if p["private"] == 22 and p["type"] == "tcp"]
    assert ssh_port and ssh_port[0]["public"] != 22 and ssh_port[0]["ip"]
    assert running["globalNetworking"]["enabled"] is True and running["globalNetworking"]["ip"]

    renamed = client.update_pod(pod["id"], {"name": "contract-test-renamed"})
    assert renamed["name"] == "contract-test-renamed"
    assert client.list_pods()[0]["name"] == "contract-test-renamed"

    assert client.delete_pod(pod["id"]) is None
    with pytest.raises(RunPodNotFound) as info:
        client.get_pod(pod["id"])
    assert info.value.status == 404 and "getPod" in str(info.value)
    assert client.list_pods() == []
    # bearer auth on every request
    assert all(r.authorization_ok for r in fake_api.requests)


def test_stop_start_and_terminate_actions(client):
    pod = client.create_pod(dict(GPU_POD))
    _wait_for_status(client, pod["id"], "RUNNING")
    assert client.pod_action(pod["id"], "stop")["status"] == "EXITED"
    with pytest.raises(RunPodAPIError) as info:
        client.pod_action(pod["id"], "restart")
    assert info.value.status == 409
    assert client.pod_action(pod["id"], "start")["status"] in ("PROVISIONING", "STARTING")
    assert client.pod_action(pod["id"], "terminate") is None
    with pytest.raises(RunPodNotFound):
        client.get_pod(pod["id"])


def test_429_is_retried_after_the_retry_after_delay(client, fake_api):
    fake_api.inject(Fault(status=429, retry_after="1", method="GET"))
    started = time.monotonic()
    assert client.list_pods() == []
    assert time.monotonic() - started >= 0.95
    assert [r.status for r in fake_api.calls("GET")] == [429, 200]


def test_retry_after_is_capped_by_the_policy(fake_api, api_key):
    slept = []
    capped = RunPodClient(api_key=api_key, base_url=fake_api.url,
                          retry=RetryPolicy(max_attempts=2, max_backoff_s=3.0),
                          sleep=slept.append)
    fake_api.inject(Fault(status=429, retry_after="3600", method="GET"))
    capped.list_pods()
    assert slept == [3.0]


def test_5xx_is_retried_then_succeeds(client, fake_api):
    fake_api.inject(Fault(status=503, times=2))
    pod = client.create_pod(dict(GPU_POD))
    assert pod["id"] in fake_api.pod_ids()
    assert [r.status for r in fake_api.calls("POST")] == [503, 503, 201]


def test_retries_are_bounded_and_the_error_names_call_status_and_message(client, fake_api):
    fake_api.inject(Fault(status=500, times=100))
    with pytest.raises(RunPodTransportError) as info:
        client.list_pods()
    message = str(info.value)
    assert "listPods" in message and "4 attempts" in message
    assert "HTTP 500" in message and "injected failure" in message
    assert len(fake_api.calls("GET")) == 4


def test_client_errors_are_not_retried_and_carry_runpods_detail(client, fake_api):
    body = dict(GPU_POD, gpuTypeIds=["NVIDIA RTX A4000"])  # a v1 field, unknown to v2
    with pytest.raises(RunPodAPIError) as info:
        client.create_pod(body)
    error = info.value
    assert error.call == "createPod" and error.status == 422
    assert "Request validation failed" in str(error)
    assert any("gpuTypeIds" in e for e in error.errors)
    assert len(fake_api.calls("POST")) == 1


def test_read_timeout_is_retried_for_reads_but_not_for_create(client, fake_api):
    fake_api.inject(Fault(delay_s=1.5, method="GET", then_process=True))
    assert client.list_pods() == []
    assert len(fake_api.calls("GET")) == 2

    fake_api.inject(Fault(delay_s=1.5, method="POST", then_process=True))
    with pytest.raises(RunPodTransportError) as info:
        client.create_pod(dict(GPU_POD))
    assert "createPod" in str(info.value) and "timeout" in str(info.value)
    assert len(fake_api.calls("POST")) == 1  # never sent twice: no duplicate pods


def test_malformed_json_and_dropped_connections_are_retried_for_reads(client, fake_api):
    fake_api.inject(Fault(malformed=True, method="GET"))
    fake_api.inject(Fault(drop=True, method="GET"))
    assert client.list_pods() == []
    assert len(fake_api.calls("GET")) == 3


def test_malformed_json_on_a_write_is_reported(client, fake_api):
    fake_api.inject(Fault(malformed=True, method="POST"))
    with pytest.raises(RunPodTransportError) as info:
        client.create_pod(dict(GPU_POD))
    assert "not valid JSON" in str(info.value)


def test_connection_refused_is_retried_then_reported(api_key):
    dead = RunPodClient(api_key=api_key, base_url="http://127.0.0.1:9",
                        retry=RetryPolicy(max_attempts=3, backoff_s=0.01))
    with pytest.raises(RunPodTransportError) as info:
        dead.get_pod("abc")
    assert "gave up after 3 attempts" in str(info.value)
    assert dead.stats.requests_by_call == {"getPod": 3}


def test_missing_key_is_refused_and_wrong_key_is_a_401(monkeypatch, fake_api):
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(RunPodAuthError, match="RUNPOD_API_KEY"):
        RunPodClient()
    wrong = RunPodClient(api_key="not-the-key", base_url=fake_api.url)
    with pytest.raises(RunPodAPIError) as info:
        wrong.list_pods()
    assert info.value.status == 401 and "missing bearer token" in str(info.value)


def test_base_url_comes_from_runpod_api_url_and_keeps_v2_paths(fake_api):
    client = RunPodClient()  # key and URL from the environment (set by the fixture)
    assert client.base_url == fake_api.url
    client.list_pods()
    assert fake_api.requests[-1].path == "/v2/pods"


def test_api_key_never_in_repr_logs_or_exceptions(client, fake_api, api_key, all_logs):
    texts = [repr(client), str(vars(client))]
    fake_api.inject(Fault(status=500, times=100))
    for call in (client.list_pods, lambda: client.get_pod("nope")):
        with pytest.raises(Exception) as info:
            call()
        texts += [str(info.value), repr(info.value)]
    fake_api.inject(Fault(status=429, retry_after="0", times=1))
    fake_api._faults.clear()
    with pytest.raises(RunPodAPIError) as info:
        RunPodClient(api_key=api_key + "x", base_url=fake_api.url).list_pods()
    texts.append(str(info.value))
    texts.append(all_logs.text)
    assert all_logs.records, "expected retry log lines to check"
    for text in texts:
        assert api_key not in text
