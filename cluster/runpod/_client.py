"""A small client for RunPod's REST API v2 (pods only).

It speaks the paths, bodies and error shape of RunPod's published OpenAPI spec
(https://api.runpod.io/v2/openapi.json): bearer auth, ``/v2/pods`` create/list/get/
update/delete, ``/v2/pods/{id}/action``, problem+json errors ``{title, status, detail,
errors?}`` and ``Retry-After`` (integer seconds) on 429.

The API key is read from ``RUNPOD_API_KEY`` (or passed in) and kept in a private
attribute; it never appears in a repr, a log line or an exception message, nor in any exception
chained to one (every error is raised outside the ``except`` block that caught its cause, so
``__context__`` is empty, and text RunPod sends back is scrubbed of the key). The key travels only
over https: any other API URL is refused, except http on a loopback address (the tests' fake API).
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.runpod.io"
API_KEY_ENV = "RUNPOD_API_KEY"
BASE_URL_ENV = "RUNPOD_API_URL"

POD_STATUSES = ("PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED")
POD_ACTIONS = ("start", "stop", "restart", "terminate")


class RunPodError(RuntimeError):
    """Base class of every error the client raises."""


class RunPodAuthError(RunPodError):
    """No usable API key was given (RUNPOD_API_KEY unset, or not a valid header value)."""


class RunPodConfigError(RunPodError):
    """The API URL is not one the key may be sent to (not https, nor http on loopback)."""


class RunPodAPIError(RunPodError):
    """RunPod answered with an error status; names the call, the status and RunPod's message."""

    def __init__(
        self,
        call: str,
        status: int,
        title: str = "",
        detail: str = "",
        errors: Optional[List[str]] = None,
    ) -> None:
        self.call = call
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        message = f"RunPod {call} failed: HTTP {status}"
        if title:
            message += f" {title}"
        if detail:
            message += f": {detail}"
        if self.errors:
            message += " (" + "; ".join(self.errors) + ")"
        super().__init__(message)


class RunPodNotFound(RunPodAPIError):
    """HTTP 404: the pod does not exist (or was deleted)."""


class RunPodTransportError(RunPodError):
    """The call could not complete: connection errors, timeouts or malformed answers."""

    def __init__(self, call: str, reason: str) -> None:
        self.call = call
        self.reason = reason
        super().__init__(f"RunPod {call} failed: {reason}")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long the client retries transient failures."""

    max_attempts: int = 5  # total tries per call, the first included
    backoff_s: float = 0.5  # first exponential backoff step
    max_backoff_s: float = 30.0  # cap on one wait, Retry-After included
    retry_statuses: tuple = (429, 500, 502, 503, 504)


@dataclass
class CallStats:
    """Counts of HTTP requests made, by call name (for benchmarks and tests)."""

    requests_by_call: Dict[str, int] = field(default_factory=dict)

    def add(self, call: str) -> None:
        self.requests_by_call[call] = self.requests_by_call.get(call, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.requests_by_call.values())


class _Secret:
    """Holds a credential; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__

    def __reduce__(self):  # never pickled into a file by accident
        raise TypeError("the RunPod API key cannot be pickled")


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """Parse a Retry-After header: integer seconds (RunPod's form) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RunPodClient:
    """RunPod REST API v2 pod calls with timeouts and bounded retries.

    Example:
        >>> client = RunPodClient()                     # key from RUNPOD_API_KEY
        >>> pod = client.create_pod({"name": "x", "image": "runpod/base:0.6.2",
        ...                          "gpu": {"id": "NVIDIA RTX A4000", "count": 1}})
        >>> client.get_pod(pod["id"])["status"]
        'PROVISIONING'
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key:
            raise RunPodAuthError(
                f"No RunPod API key: set the {API_KEY_ENV} environment variable "
                "(create a key in the RunPod console, Settings > API Keys)."
            )
        _check_key(key)
        base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self.base_url = _checked_base_url(base, "base_url" if base_url else BASE_URL_ENV)
        self._api_key = _Secret(key)
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.retry = retry
        self.stats = CallStats()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"RunPodClient(base_url={self.base_url!r}, api_key='***')"

    # -- pods -------------------------------------------------------------------------

    def list_pods(self, include_cluster_pods: bool = False) -> List[Dict[str, Any]]:
        """GET /v2/pods: every pod of the account (cluster member pods only on request)."""
        params = {"includeClusterPods": "true"} if include_cluster_pods else None
        body = self._request("listPods", "GET", "/v2/pods", params=params)
        pods = body.get("pods") if isinstance(body, dict) else None
        if not isinstance(pods, list):
            raise RunPodTransportError("listPods", "response has no 'pods' array")
        return pods

    def get_pod(self, pod_id: str) -> Dict[str, Any]:
        """GET /v2/pods/{id}; raises RunPodNotFound once the pod is gone."""
        return self._request("getPod", "GET", f"/v2/pods/{_quote(pod_id)}")

    def create_pod(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST /v2/pods. Returns the new pod, normally still PROVISIONING (poll it)."""
        return self._request("createPod", "POST", "/v2/pods", json_body=body)

    def update_pod(self, pod_id: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """PATCH /v2/pods/{id}: only the fields given change (env is replaced whole)."""
        return self._request(
            "updatePod", "PATCH", f"/v2/pods/{_quote(pod_id)}", json_body=body
        )

    def delete_pod(self, pod_id: str) -> None:
        """DELETE /v2/pods/{id} (204); the pod is permanently terminated."""
        self._request("deletePod", "DELETE", f"/v2/pods/{_quote(pod_id)}")

    def pod_action(self, pod_id: str, action: str) -> Optional[Dict[str, Any]]:
        """POST /v2/pods/{id}/action with start|stop|restart|terminate."""
        if action not in POD_ACTIONS:
            raise ValueError(f"action must be one of {POD_ACTIONS}. Got {action!r} instead.")
        return self._request(
            "podAction",
            "POST",
            f"/v2/pods/{_quote(pod_id)}/action",
            json_body={"action": action},
        )

    # -- transport --------------------------------------------------------------------

    def _request(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: Optional[Dict[str, str]] = None,
        json_body: Optional[Dict[str, Any]] = None,
    ) -> Any:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        # A create that may have reached the server is not repeated blindly: only
        # connection failures before sending, 429 and 5xx answers are retried for POST.
        idempotent = method in ("GET", "DELETE", "PATCH")
        attempts = max(1, self.retry.max_attempts)
        last_reason = ""
        for attempt in range(1, attempts + 1):
            self.stats.add(call)
            wait: Optional[float] = None
            # Errors are decided inside the except blocks but raised after them, so no error
            # of this client has a __context__ (a transport exception may quote the headers).
            fatal: Optional[RunPodError] = None
            response: Optional[requests.Response] = None
            try:
                response = self._session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers=headers,
                    timeout=self.timeout,
                )
            except requests.exceptions.ConnectTimeout:
                last_reason = "connection timed out"
            except requests.exceptions.ReadTimeout:
                last_reason = f"no answer within {self.timeout[1]:g} s (read timeout)"
                if not idempotent:
                    fatal = RunPodTransportError(call, last_reason)
            except requests.exceptions.ConnectionError as exc:
                last_reason = f"connection error ({type(exc).__name__})"
                if not idempotent and not _failed_before_sending(exc):
                    fatal = RunPodTransportError(call, last_reason)
            except Exception as exc:  # noqa: BLE001 - e.g. InvalidHeader, UnicodeEncodeError quote the key
                fatal = RunPodTransportError(call, type(exc).__name__)
            if fatal is not None:
                raise fatal
            if response is not None:
                if response.status_code < 400:
                    body, garbled = self._decode(call, response)
                    if garbled is None:
                        return body
                    # A garbled answer to a read is retried; to a write it is not,
                    # since the write may have happened.
                    if method != "GET":
                        raise garbled
                    last_reason = garbled.reason
                else:
                    error = self._error_from(call, response)
                    if response.status_code not in self.retry.retry_statuses:
                        raise error
                    last_reason = str(error)
                    if response.status_code == 429:
                        wait = _retry_after_seconds(response.headers.get("Retry-After"))
            if attempt == attempts:
                break
            if wait is None:
                wait = self.retry.backoff_s * (2 ** (attempt - 1))
                wait *= 1.0 + 0.1 * random.random()  # small jitter
            wait = min(wait, self.retry.max_backoff_s)
            logger.info(
                "RunPod %s attempt %d/%d failed (%s); retrying in %.1f s",
                call, attempt, attempts, last_reason, wait,
            )
            self._sleep(wait)
        raise RunPodTransportError(
            call, f"gave up after {attempts} attempts; last failure: {last_reason}"
        )

    @staticmethod
    def _decode(call: str, response: requests.Response) -> tuple[Any, Optional[RunPodTransportError]]:
        """(body, None), or (None, the error) when the body is not JSON."""
        if response.status_code == 204 or not response.content:
            return None, None
        try:
            return response.json(), None
        except ValueError:
            pass
        return None, RunPodTransportError(call, f"HTTP {response.status_code} with a body that is not valid JSON")

    def _error_from(self, call: str, response: requests.Response) -> RunPodAPIError:
        title, detail, errors = "", "", None
        problem: Any = None
        try:
            problem = response.json()
        except ValueError:
            pass
        if isinstance(problem, dict):
            title = str(problem.get("title") or "")
            detail = str(problem.get("detail") or "")
            raw_errors = problem.get("errors")
            if isinstance(raw_errors, list):
                errors = [str(item) for item in raw_errors]
        else:
            title = response.reason or ""
            detail = (response.text or "")[:200]
        # A server (or a proxy in front of it) may echo the request's credentials back.
        key = self._api_key.reveal()
        title, detail = _scrub(title, key), _scrub(detail, key)
        errors = [_scrub(item, key) for item in errors] if errors else errors
        cls = RunPodNotFound if response.status_code == 404 else RunPodAPIError
        return cls(call, response.status_code, title, detail, errors)


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _check_key(key: Any) -> None:
    """The key must be a header-safe token: visible ASCII, no spaces (the key is never quoted)."""
    if not isinstance(key, str) or not all(33 <= ord(ch) <= 126 for ch in key):
        raise RunPodAuthError(
            f"The RunPod API key (argument api_key or {API_KEY_ENV}) holds characters an HTTP "
            "header cannot carry (expected visible ASCII without spaces or line breaks); "
            "copy it again from the RunPod console, Settings > API Keys."
        )


_LOOPBACK_NAMES = ("localhost",)


def _checked_base_url(url: str, source: str) -> str:
    """``url`` without a trailing slash, when the key may be sent there (https, or http on loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url.rstrip("/")
    if parts.scheme == "http" and host and _is_loopback(host):
        return url.rstrip("/")
    raise RunPodConfigError(
        f"{source}: expected an https:// RunPod API URL (http only on a loopback address), "
        f"got {url[:80]!r}; the API key must not travel unencrypted"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quote(pod_id: str) -> str:
    from urllib.parse import quote

    return quote(str(pod_id), safe="")


def _failed_before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection was refused/unreachable, so no request reached RunPod."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "Connection refused", "Name or service not known",
                       "Failed to resolve", "NameResolutionError")
    )

