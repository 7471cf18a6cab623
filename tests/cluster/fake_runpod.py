"""A fake RunPod REST API v2 (pods) on 127.0.0.1, written from RunPod's OpenAPI spec.

It follows the documented request and response shapes, not our client: request bodies
are checked against the spec's schemas (unknown fields are a 422 with an ``errors`` list,
as ``unevaluatedProperties: false`` demands), pods move PROVISIONING -> STARTING ->
RUNNING over time, ``runtime`` is null and ``ssh.direct`` absent until RUNNING, DELETE
answers 204 and the pod is gone (404) afterwards, errors are problem+json
``{title, status, detail, errors?}`` and 429 carries ``Retry-After``.

Faults can be injected (status codes, delays longer than a client timeout, malformed
JSON, dropped connections) and pods can be made to never start. The "machine" behind
every pod is configurable: a public IP and SSH port (a local sshd in the end-to-end
test) and a private global-networking IP.
"""

from __future__ import annotations

import json
import random
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import parse_qs, urlparse

_CONTAINER_KEYS = {"args", "disk", "env", "image", "ports", "registry"}
_CREATE_KEYS = _CONTAINER_KEYS | {
    "name", "cloud", "cpu", "dataCenterIds", "globalNetworking", "gpu", "mounts",
    "startJupyter", "startSsh", "templateId",
}
_UPDATE_KEYS = _CONTAINER_KEYS | {"globalNetworking", "locked", "mounts", "name", "templateId"}
_GPU_KEYS = {"id", "count", "allowedCudaVersions", "minCudaVersion", "minRamPerGpu",
             "minVcpuCountPerGpu"}
_ACTIONS_BY_STATUS = {
    "PROVISIONING": ["stop", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "ERROR": ["start", "terminate"],
}


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next `times` matching requests."""

    status: Optional[int] = None  # answer with this status and a problem+json body
    retry_after: Optional[str] = None  # Retry-After header value (with status 429)
    delay_s: float = 0.0  # sleep before answering (longer than a client timeout = timeout)
    malformed: bool = False  # 200 with a body that is not JSON
    drop: bool = False  # close the connection without an answer
    method: Optional[str] = None  # only requests with this method (None: any)
    path_prefix: str = "/v2/"  # only requests under this path
    times: int = 1
    then_process: bool = False  # after the delay, handle the request normally


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int
    authorization_ok: bool
    body: Any = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Pod:
    id: str
    body: Dict[str, Any]
    created_at: float
    created_iso: str
    never_start: bool = False
    stopped: bool = False
    error: bool = False


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(status: int, title: str, detail: str, errors: Optional[List[str]] = None) -> Dict[str, Any]:
    body: Dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


_TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


class FakeRunPod:
    """An in-process HTTP server playing RunPod's v2 pods API.

    Example:
        >>> with FakeRunPod(api_key="k") as fake:
        ...     os.environ["RUNPOD_API_URL"] = fake.url
    """

    def __init__(
        self,
        api_key: str,
        *,
        public_ip: str = "127.0.0.1",
        ssh_port: Optional[int] = None,
        private_ip: str = "127.0.0.2",
        provision_s: float = 0.3,
        start_s: float = 0.3,
    ) -> None:
        self.api_key = api_key
        self.public_ip = public_ip
        self.ssh_port = ssh_port
        self.private_ip = private_ip
        self.provision_s = provision_s
        self.start_s = start_s
        self.requests: List[RequestRecord] = []
        self.deleted: List[str] = []
        self.on_delete: List[Callable[[str], None]] = []
        self.on_create: List[Callable[[str, Dict[str, Any]], None]] = []
        self._pods: Dict[str, _Pod] = {}
        self._faults: List[Fault] = []
        self._never_start_next = 0
        self._lock = threading.RLock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> "FakeRunPod":
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeRunPod":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def never_start_next(self, count: int = 1) -> None:
        """The next `count` created pods stay PROVISIONING forever."""
        with self._lock:
            self._never_start_next += count

    def pod_ids(self) -> List[str]:
        with self._lock:
            return list(self._pods)

    def pod_json(self, pod_id: str) -> Dict[str, Any]:
        with self._lock:
            return self._view(self._pods[pod_id])

    def calls(self, method: Optional[str] = None, path_prefix: str = "/v2/") -> List[RequestRecord]:
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    # -- pod model ----------------------------------------------------------------------

    def _status(self, pod: _Pod) -> str:
        if pod.error:
            return "ERROR"
        if pod.stopped:
            return "EXITED"
        age = time.monotonic() - pod.created_at
        if pod.never_start or age < self.provision_s:
            return "PROVISIONING"
        if age < self.provision_s + self.start_s:
            return "STARTING"
        return "RUNNING"

    def _view(self, pod: _Pod) -> Dict[str, Any]:
        body = pod.body
        status = self._status(pod)
        ports = list(body.get("ports") or [])
        gpu = body.get("gpu")
        gn_enabled = bool(body.get("globalNetworking")) and status != "PROVISIONING"
        runtime = None
        direct = None
        if status == "RUNNING":
            runtime_ports = []
            for entry in ports:
                number, _, kind = entry.partition("/")
                if kind == "tcp":
                    public = self.ssh_port if number == "22" and self.ssh_port else 40000 + int(number)
                    runtime_ports.append({"private": int(number), "public": public,
                                          "type": "tcp", "ip": self.public_ip})
                else:
                    runtime_ports.append({"private": int(number), "public": None,
                                          "type": kind, "ip": None})
            runtime = {"uptime": int(time.monotonic() - pod.created_at), "gpus": [],
                       "ports": runtime_ports}
            if "22/tcp" in ports:
                port = self.ssh_port or 40022
                direct = {"host": self.public_ip, "port": port, "username": "root",
                          "command": f"ssh root@{self.public_ip} -p {port}"}
        view: Dict[str, Any] = {
            "id": pod.id,
            "name": body["name"],
            "image": body.get("image", ""),
            "args": body.get("args", ""),
            "disk": body.get("disk", 50),
            "ports": ports,
            "env": dict(body.get("env") or {}),
            "registry": body.get("registry"),
            "status": status,
            "actions": list(_ACTIONS_BY_STATUS.get(status, [])),
            "mounts": body.get("mounts") or {},
            "cloud": body.get("cloud", "SECURE"),
            "dataCenterId": None if status == "PROVISIONING" else "US-TX-3",
            "cudaVersion": None if status == "PROVISIONING" else "12.8",
            "ssh": {
                "proxy": None if status == "PROVISIONING" else {
                    "host": "ssh.runpod.io", "port": 22, "username": f"{pod.id}-64411eb2",
                    "command": f"ssh {pod.id}-64411eb2@ssh.runpod.io"},
                "direct": direct,
            },
            "template": None,
            "cost": 0.0 if status in ("EXITED",) else 0.25 * int((gpu or {}).get("count", 1)),
            "locked": bool(body.get("locked", False)),
            "globalNetworking": (
                {"enabled": True, "ip": self.private_ip,
                 "internalDns": f"{pod.id}.runpod.internal"} if gn_enabled else {"enabled": False}
            ),
            "runtime": runtime,
            "createdAt": pod.created_iso,
            "startedAt": _now_iso() if status == "RUNNING" else None,
        }
        if gpu is not None:
            count = int(gpu.get("count", 1))
            view["gpu"] = {"id": gpu["id"], "count": count, "vcpuCount": 8 * count,
                           "memory": 32 * count}
        if body.get("cpu") is not None:
            view["cpu"] = dict(body["cpu"], memory=4 * int(body["cpu"].get("vcpuCount", 2)))
        return view

    # -- request handling ---------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self._faults:
                if (fault.method is None or fault.method == method) and path.startswith(fault.path_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def handle(self, method: str, raw_path: str, headers: Dict[str, str], raw_body: bytes):
        """Returns (status, headers, body-bytes) or None to drop the connection."""
        parsed = urlparse(raw_path)
        path = parsed.path
        authorized = headers.get("authorization", "") == f"Bearer {self.api_key}"
        record = RequestRecord(method, path, 0, authorized)
        with self._lock:
            self.requests.append(record)
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.drop:
                record.status = -1
                return None
            if fault.malformed:
                record.status = 200
                return 200, {"Content-Type": "application/json"}, b'{"pods": [ {"id": '
            if fault.status is not None:
                record.status = fault.status
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                detail = ("rate limit exceeded for the minute window" if fault.status == 429
                          else "injected failure")
                return self._json(fault.status, _problem(fault.status, _TITLES.get(fault.status, "Error"),
                                                         detail), extra)
            if not fault.then_process:
                record.status = 200
                return self._json(200, {})
        if not authorized:
            record.status = 401
            return self._json(401, _problem(401, "Unauthorized", "missing bearer token"))
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                record.status = 400
                return self._json(400, _problem(400, "Bad Request", "request body is not valid JSON"))
        record.body = body
        status, payload = self._route(method, path, parse_qs(parsed.query), body)
        record.status = status
        if status == 204:
            return 204, {}, b""
        return self._json(status, payload)

    @staticmethod
    def _json(status: int, payload: Any, extra: Optional[Dict[str, str]] = None):
        content_type = "application/problem+json" if status >= 400 else "application/json"
        headers = {"Content-Type": content_type}
        headers.update(extra or {})
        return status, headers, json.dumps(payload).encode()

    def _route(self, method: str, path: str, query: Dict[str, List[str]], body: Any):
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["v2", "pods"]:
            return 404, _problem(404, "Not Found", "resource not found")
        if len(parts) == 2:
            if method == "GET":
                with self._lock:
                    return 200, {"pods": [self._view(p) for p in self._pods.values()]}
            if method == "POST":
                return self._create(body)
            return 405, _problem(405, "Method Not Allowed",
                                 "The requested method is not allowed for this path.")
        pod_id = parts[2]
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None:
            return 404, _problem(404, "Not Found", "pod not found")
        if len(parts) == 3:
            if method == "GET":
                with self._lock:
                    return 200, self._view(pod)
            if method == "PATCH":
                return self._update(pod, body)
            if method == "DELETE":
                self._delete(pod_id)
                return 204, None
            return 405, _problem(405, "Method Not Allowed",
                                 "The requested method is not allowed for this path.")
        if len(parts) == 4 and parts[3] == "action" and method == "POST":
            return self._action(pod, body)
        return 404, _problem(404, "Not Found", "resource not found")

    def _create(self, body: Any):
        errors = _check_object(body, _CREATE_KEYS, "$")
        if isinstance(body, dict):
            if not isinstance(body.get("name"), str) or not body.get("name"):
                errors.append("$.name: required, a string of length >= 1")
            if "templateId" not in body and not isinstance(body.get("image"), str):
                errors.append("$.image: required unless templateId is set")
            gpu = body.get("gpu")
            if gpu is not None:
                errors += _check_object(gpu, _GPU_KEYS, "$.gpu")
                if isinstance(gpu, dict):
                    if not isinstance(gpu.get("id"), str):
                        errors.append("$.gpu.id: required string")
                    count = gpu.get("count", 1)
                    if not isinstance(count, int) or count < 1:
                        errors.append("$.gpu.count: must be an integer >= 1")
            errors += _check_container(body, "$")
        if errors:
            return 422, _problem(422, "Unprocessable Entity", "Request validation failed.", errors)
        if (body.get("gpu") is None) == (body.get("cpu") is None):
            return 400, _problem(400, "Bad Request", "exactly one of gpu or cpu must be set")
        if body.get("globalNetworking") and "NVIDIA" not in str((body.get("gpu") or {}).get("id", "")):
            return 400, _problem(400, "Bad Request",
                                 "global networking requires an NVIDIA GPU pod")
        pod_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=14))
        with self._lock:
            never = self._never_start_next > 0
            if never:
                self._never_start_next -= 1
            pod = _Pod(pod_id, json.loads(json.dumps(body)), time.monotonic(), _now_iso(),
                       never_start=never)
            self._pods[pod_id] = pod
            view = self._view(pod)
            callbacks = list(self.on_create)
        for callback in callbacks:
            callback(pod_id, pod.body)
        return 201, view

    def _update(self, pod: _Pod, body: Any):
        errors = _check_object(body, _UPDATE_KEYS, "$")
        if isinstance(body, dict):
            if "name" in body and (not isinstance(body["name"], str) or not body["name"]):
                errors.append("$.name: must be a string of length >= 1")
            errors += _check_container(body, "$")
        if errors:
            return 422, _problem(422, "Unprocessable Entity", "Request validation failed.", errors)
        with self._lock:
            pod.body.update(json.loads(json.dumps(body)))  # PATCH: given fields replace
            return 200, self._view(pod)

    def _delete(self, pod_id: str) -> None:
        with self._lock:
            self._pods.pop(pod_id, None)
            callbacks = list(self.on_delete)
        for callback in callbacks:
            callback(pod_id)
        with self._lock:  # recorded once the pod is gone, as a caller polling for it expects
            self.deleted.append(pod_id)

    def _action(self, pod: _Pod, body: Any):
        errors = _check_object(body, {"action"}, "$")
        action = body.get("action") if isinstance(body, dict) else None
        if not errors and action not in ("start", "stop", "restart", "terminate"):
            errors.append("$.action: must be one of start, stop, restart, terminate")
        if errors:
            return 422, _problem(422, "Unprocessable Entity", "Request validation failed.", errors)
        with self._lock:
            status = self._status(pod)
            if action not in _ACTIONS_BY_STATUS.get(status, []):
                return 409, _problem(409, "Conflict", f"action {action} is not valid for a {status} pod")
            if action == "terminate":
                pass
            elif action == "stop":
                pod.stopped = True
            elif action == "start":
                pod.stopped, pod.error = False, False
                pod.created_at = time.monotonic()
            if action != "terminate":
                return 200, self._view(pod)
        self._delete(pod.id)
        return 204, None


def _check_object(body: Any, allowed: set, where: str) -> List[str]:
    if not isinstance(body, dict):
        return [f"{where}: must be an object"]
    return [f"{where}: additional properties '{key}' not allowed"
            for key in sorted(body) if key not in allowed]


def _check_container(body: Dict[str, Any], where: str) -> List[str]:
    errors = []
    env = body.get("env")
    if env is not None and (not isinstance(env, dict)
                            or not all(isinstance(v, str) for v in env.values())):
        errors.append(f"{where}.env: must be an object of string values")
    ports = body.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            errors.append(f"{where}.ports: must be an array of strings")
        else:
            for entry in ports:
                number, _, kind = str(entry).partition("/")
                if not number.isdigit() or kind not in ("tcp", "http", "udp"):
                    errors.append(f"{where}.ports: '{entry}' is not port/protocol")
    disk = body.get("disk")
    if disk is not None and (not isinstance(disk, int) or disk < 1):
        errors.append(f"{where}.disk: must be an integer >= 1")
    return errors


def _make_handler(fake: FakeRunPod):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            result = fake.handle(self.command, self.path, headers, raw)
            if result is None:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            status, out_headers, payload = result
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    return Handler
