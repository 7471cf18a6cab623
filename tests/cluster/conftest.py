"""Fixtures for the cluster tests: a fake RunPod API, a client pointed at it, and (in
test_cluster_e2e.py) a throwaway local sshd standing in for the pods."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_runpod import FakeRunPod  # noqa: E402

from cluster.runpod import RetryPolicy, RunPodClient  # noqa: E402


@pytest.fixture
def api_key() -> str:
    """A recognisable fake secret, so tests can search for it in logs and messages."""
    return "rpa_SECRET_" + secrets.token_hex(12)


@pytest.fixture
def fake_api(api_key, monkeypatch):
    with FakeRunPod(api_key=api_key, provision_s=0.2, start_s=0.2) as fake:
        monkeypatch.setenv("RUNPOD_API_KEY", api_key)
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        yield fake


@pytest.fixture
def fast_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=4, backoff_s=0.01, max_backoff_s=2.0)


@pytest.fixture
def client(fake_api, api_key, fast_retry) -> RunPodClient:
    return RunPodClient(api_key=api_key, base_url=fake_api.url, read_timeout_s=1.0,
                        retry=fast_retry)


@pytest.fixture
def all_logs(caplog):
    """Capture every log record at DEBUG (urllib3's included)."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture(scope="module")
def local_pods():
    """This machine as the pods: a throwaway sshd and user (module-wide; removed after)."""
    from local_pods import LocalPods, LocalPodsUnavailable

    try:
        pods = LocalPods().start()
    except LocalPodsUnavailable as exc:
        pytest.skip(f"cannot play pods on this machine: {exc}")
    try:
        yield pods
    finally:
        pods.close()
