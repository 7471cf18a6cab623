"""The API key travels only over https and never rides on an exception, its chain included."""

from __future__ import annotations

import pytest
import requests

from cluster.runpod import RetryPolicy, RunPodAPIError, RunPodAuthError, RunPodClient, RunPodConfigError, RunPodError

KEY = "rpa_SECRET_0123456789abcdef"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and everything reachable through __context__ and __cause__."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__context__, item.__cause__]
    return seen


def _assert_no_key(exc: BaseException, key: str = KEY) -> None:
    for item in _chain(exc):
        texts = [str(item), repr(item), *(repr(a) for a in item.args), repr(vars(item)) if hasattr(item, "__dict__") else ""]
        assert not any(key in t for t in texts), f"{type(item).__name__} carries the key"


@pytest.mark.parametrize(
    "url",
    [
        "http://api.runpod.io",
        "http://10.0.0.5:8080",
        "ftp://api.runpod.io",
        "api.runpod.io",
        "https://",
        "http://localhost.evil.example",
    ],
)
def test_a_url_the_key_may_not_travel_to_is_refused(url):
    with pytest.raises(RunPodConfigError, match="https://") as info:
        RunPodClient(api_key=KEY, base_url=url)
    assert "base_url" in str(info.value)
    _assert_no_key(info.value)


def test_the_url_from_the_environment_is_named_when_refused(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_URL", "http://api.runpod.io")
    with pytest.raises(RunPodConfigError, match="RUNPOD_API_URL"):
        RunPodClient(api_key=KEY)


@pytest.mark.parametrize("url", ["https://api.runpod.io/", "http://127.0.0.1:8123", "http://localhost:1", "http://[::1]:80"])
def test_https_and_loopback_http_are_accepted(url):
    assert RunPodClient(api_key=KEY, base_url=url).base_url == url.rstrip("/")


@pytest.mark.parametrize("key", ["rpa_abc\n", "rpa abc", "rpa_\u00e9t\u00e9", "rpa_\x00zero", "\trpa"])
def test_a_key_no_header_can_carry_is_refused_without_echoing_it(key):
    with pytest.raises(RunPodAuthError, match="visible ASCII") as info:
        RunPodClient(api_key=key, base_url="https://api.runpod.io")
    _assert_no_key(info.value, key.strip() or key)


class _Session:
    """Stands in for requests.Session: raises what it is given, quoting the request's headers."""

    def __init__(self, make_error):
        self.headers = {}
        self.make_error = make_error

    def request(self, method, url, *, headers, **_):
        raise self.make_error(headers["Authorization"])


@pytest.mark.parametrize(
    "make_error",
    [
        lambda auth: requests.exceptions.InvalidHeader(f"Invalid return character in header value: {auth!r}"),
        lambda auth: UnicodeEncodeError("latin-1", auth, 0, 1, "ordinal not in range"),
        lambda auth: requests.exceptions.ConnectionError(f"proxy refused {auth}"),
        lambda auth: requests.exceptions.ReadTimeout(f"timed out sending {auth}"),
        lambda auth: RuntimeError(f"unexpected {auth}"),
    ],
    ids=["invalid-header", "unicode", "connection", "read-timeout", "other"],
)
@pytest.mark.parametrize("method", ["get_pod", "create_pod"])
def test_no_transport_error_carries_the_key_in_its_chain(make_error, method):
    client = RunPodClient(api_key=KEY, base_url="https://api.runpod.io", retry=RetryPolicy(max_attempts=2, backoff_s=0.0))
    client._session = _Session(make_error)
    call = (lambda: client.get_pod("p1")) if method == "get_pod" else (lambda: client.create_pod({"name": "x"}))
    with pytest.raises(RunPodError) as info:
        call()
    _assert_no_key(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


class _Echo:
    """A response whose problem+json body echoes the credentials back."""

    def __init__(self, status, body=None, text=""):
        self.status_code = status
        self._body = body
        self.text = text
        self.reason = "Unauthorized"
        self.headers = {}
        self.content = text.encode() or b"{}"

    def json(self):
        if self._body is None:
            raise ValueError("not json")
        return self._body


@pytest.mark.parametrize(
    "response",
    [
        _Echo(401, {"title": f"bad token Bearer {KEY}", "detail": f"key {KEY} revoked", "errors": [KEY]}),
        _Echo(403, None, text=f"<html>forbidden for {KEY}</html>"),
    ],
    ids=["problem-json", "html"],
)
def test_text_the_server_echoes_is_scrubbed_of_the_key(response):
    client = RunPodClient(api_key=KEY, base_url="https://api.runpod.io")

    class _Session:
        headers: dict = {}

        def request(self, *a, **k):
            return response

    client._session = _Session()
    with pytest.raises(RunPodAPIError) as info:
        client.list_pods()
    assert "***" in str(info.value)
    _assert_no_key(info.value)
    assert info.value.__context__ is None


def test_a_garbled_answer_to_a_write_is_raised_without_a_context():
    client = RunPodClient(api_key=KEY, base_url="https://api.runpod.io")

    class _Session:
        headers: dict = {}

        def request(self, *a, **k):
            return _Echo(200, None, text=f"garbage {KEY}")

    client._session = _Session()
    with pytest.raises(RunPodError, match="not valid JSON") as info:
        client.create_pod({"name": "x"})
    assert info.value.__context__ is None
    _assert_no_key(info.value)
