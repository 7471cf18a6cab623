"""Ray cluster-launcher node provider for RunPod GPU pods (REST API v2).

Loaded by Ray from `provider: {type: external, module: cluster.runpod.RunPodNodeProvider}`.

Addressing: `external_ip` is the public IP of the pod's `22/tcp` port mapping (the public
port is not 22, so the command runner adds it); `internal_ip` is the pod's global-networking
private address, on which every pod reaches every other on all ports (port 22 for SSH).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Optional

from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import NODE_KIND_HEAD, TAG_RAY_CLUSTER_NAME, TAG_RAY_NODE_KIND

from cluster.runpod._client import (
    API_KEY_ENV,
    BASE_URL_ENV,
    RunPodClient,
    RunPodError,
    RunPodNotFound,
    RunPodTransportError,
)
from cluster.runpod._runner import RunPodCommandRunner
from cluster.runpod._tags import decode_pod_name, encode_pod_name

logger = logging.getLogger(__name__)

# node_config keys that are ours, not RunPod's: removed before the create call.
PROVIDER_ONLY_NODE_KEYS = ("estimated_cost_per_hour",)
STARTING_STATUSES = ("PROVISIONING", "STARTING")


def _pod_ssh_endpoint(pod: Dict[str, Any]) -> Optional[tuple]:
    """(public ip, public port) of the pod's 22/tcp mapping, once RUNNING."""
    runtime = pod.get("runtime") or {}
    for port in runtime.get("ports") or []:
        if port.get("private") == 22 and port.get("type") == "tcp" and port.get("ip") and port.get("public"):
            return port["ip"], int(port["public"])
    direct = (pod.get("ssh") or {}).get("direct")
    if direct and direct.get("host") and direct.get("port"):
        return direct["host"], int(direct["port"])
    return None


def _age_seconds(pod: Dict[str, Any], first_seen: float) -> float:
    """Seconds since creation: the smaller of RunPod's createdAt (whole seconds, maybe
    skewed) and the time this provider first saw the pod."""
    seen_age = time.time() - first_seen
    created = pod.get("createdAt")
    if isinstance(created, str):
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
            return min(seen_age, time.time() - created_at)
        except ValueError:
            pass
    return seen_age


class RunPodNodeProvider(NodeProvider):
    """Creates, lists, tags and terminates RunPod pods for one Ray cluster.

    Provider config keys (besides `type` and `module`):
        pod_start_timeout_s: a pod still PROVISIONING/STARTING after this long is
            reported and terminated (default 900).
        internal_ssh_port: SSH port on the private network (default 22).
        ssh_public_key_path: public key given to pods as PUBLIC_KEY (default: the
            auth.ssh_private_key path + ".pub"); `ray up` stores its text as
            `ssh_public_key` so the head, which only has the private key, has it too.
        head_api_key: give the head pod RUNPOD_API_KEY in its env so its autoscaler can
            manage pods (default true).
        cache_refresh_s: minimum seconds between refreshes of one pod (default 2).
    """

    def __init__(self, provider_config: Dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self.pod_start_timeout_s = float(provider_config.get("pod_start_timeout_s", 900))
        self.internal_ssh_port = int(provider_config.get("internal_ssh_port", 22))
        self.cache_refresh_s = float(provider_config.get("cache_refresh_s", 2.0))
        self.orphan_watch_s = float(provider_config.get("orphan_watch_s", 1800))
        self._client: Optional[RunPodClient] = None
        self._lock = threading.RLock()
        self._pods: Dict[str, Dict[str, Any]] = {}
        self._tags: Dict[str, Dict[str, str]] = {}
        self._fetched_at: Dict[str, float] = {}
        self._first_seen: Dict[str, float] = {}
        # create tokens of create calls that failed without an answer -> forget-after time
        self._orphan_tokens: Dict[str, float] = {}

    # -- API access -------------------------------------------------------------------

    @property
    def client(self) -> RunPodClient:
        if self._client is None:
            self._client = RunPodClient()
        return self._client

    def _remember(self, pod: Dict[str, Any]) -> Optional[Dict[str, str]]:
        decoded = decode_pod_name(pod.get("name", ""))
        if decoded is None:
            return None
        tags, _token = decoded
        with self._lock:
            self._pods[pod["id"]] = pod
            self._tags[pod["id"]] = tags
            self._fetched_at[pod["id"]] = time.monotonic()
            self._first_seen.setdefault(pod["id"], time.time())
        return tags

    def _forget(self, pod_id: str) -> None:
        with self._lock:
            self._pods.pop(pod_id, None)
            self._tags.pop(pod_id, None)
            self._fetched_at.pop(pod_id, None)

    def _pod(self, pod_id: str, refresh_unless=None) -> Optional[Dict[str, Any]]:
        """The cached pod; fetched again when absent, or when `refresh_unless(pod)` is
        false and the cached copy is older than cache_refresh_s. None once gone."""
        with self._lock:
            pod = self._pods.get(pod_id)
            age = time.monotonic() - self._fetched_at.get(pod_id, 0.0)
        stale = pod is None or (
            refresh_unless is not None and not refresh_unless(pod) and age >= self.cache_refresh_s
        )
        if stale:
            try:
                pod = self.client.get_pod(pod_id)
            except RunPodNotFound:
                self._forget(pod_id)
                return None
            self._remember(pod)
        return pod

    # -- NodeProvider: queries ----------------------------------------------------------

    def non_terminated_nodes(self, tag_filters: Dict[str, str]) -> List[str]:
        pods = self.client.list_pods()
        listed = set()
        matching = []
        now = time.monotonic()
        with self._lock:
            self._orphan_tokens = {t: d for t, d in self._orphan_tokens.items() if d > now}
            orphans = set(self._orphan_tokens)
        for pod in pods:
            tags = self._remember(pod)
            if tags is None or tags.get(TAG_RAY_CLUSTER_NAME) != self.cluster_name:
                continue
            if pod.get("status") == "TERMINATED":
                continue
            if orphans and decode_pod_name(pod["name"])[1] in orphans:
                logger.warning("Terminating pod %s, created by a create call that failed "
                               "without an answer", pod["id"])
                self.terminate_node(pod["id"])
                continue
            listed.add(pod["id"])
            if self._terminate_if_stuck(pod):
                listed.discard(pod["id"])
                continue
            if all(tags.get(key) == value for key, value in tag_filters.items()):
                matching.append(pod["id"])
        with self._lock:
            for pod_id in [p for p in self._pods if p not in listed]:
                self._forget(pod_id)
        return matching

    def _terminate_if_stuck(self, pod: Dict[str, Any]) -> bool:
        if pod.get("status") not in STARTING_STATUSES:
            return False
        age = _age_seconds(pod, self._first_seen.get(pod["id"], time.time()))
        if age < self.pod_start_timeout_s:
            return False
        logger.warning(
            "RunPod pod %s is still %s after %.0f s (pod_start_timeout_s=%.0f): "
            "terminating it so it is not billed; the autoscaler will retry.",
            pod["id"], pod.get("status"), age, self.pod_start_timeout_s,
        )
        self.terminate_node(pod["id"])
        return True

    def is_running(self, node_id: str) -> bool:
        pod = self._pod(node_id, refresh_unless=lambda p: p.get("status") == "RUNNING")
        return pod is not None and pod.get("status") == "RUNNING"

    def is_terminated(self, node_id: str) -> bool:
        pod = self._pod(node_id, refresh_unless=lambda p: p.get("status") == "RUNNING")
        return pod is None or pod.get("status") == "TERMINATED"

    def node_tags(self, node_id: str) -> Dict[str, str]:
        if self._pod(node_id) is None:
            return {}
        with self._lock:
            return dict(self._tags.get(node_id, {}))

    def external_ip(self, node_id: str) -> Optional[str]:
        pod = self._pod(node_id, refresh_unless=lambda p: _pod_ssh_endpoint(p) is not None)
        endpoint = _pod_ssh_endpoint(pod) if pod else None
        return endpoint[0] if endpoint else None

    def external_ssh_port(self, node_id: str) -> Optional[int]:
        """The public port mapped to the pod's port 22 (None until RUNNING)."""
        pod = self._pod(node_id, refresh_unless=lambda p: _pod_ssh_endpoint(p) is not None)
        endpoint = _pod_ssh_endpoint(pod) if pod else None
        return endpoint[1] if endpoint else None

    def internal_ip(self, node_id: str) -> Optional[str]:
        pod = self._pod(
            node_id, refresh_unless=lambda p: bool((p.get("globalNetworking") or {}).get("ip"))
        )
        if pod is None:
            return None
        return (pod.get("globalNetworking") or {}).get("ip") or None

    # -- NodeProvider: changes ----------------------------------------------------------

    def create_node(
        self, node_config: Dict[str, Any], tags: Dict[str, str], count: int
    ) -> Dict[str, Any]:
        created: Dict[str, Any] = {}
        for _ in range(count):
            token = secrets.token_hex(6)
            all_tags = dict(tags)
            all_tags[TAG_RAY_CLUSTER_NAME] = self.cluster_name
            body = self._create_body(node_config, all_tags, token)
            try:
                pod = self.client.create_pod(body)
            except RunPodTransportError:
                # The create may have happened (or may still happen) without us seeing
                # the answer: such a pod is found by its one-off token, now and on every
                # later listing for a while, and terminated rather than leaked.
                with self._lock:
                    self._orphan_tokens[token] = time.monotonic() + self.orphan_watch_s
                self._terminate_by_token(token)
                raise
            self._remember(pod)
            created[pod["id"]] = pod
            logger.info("Created RunPod pod %s (%s) for %s", pod["id"], pod.get("status"),
                        all_tags.get(TAG_RAY_NODE_KIND))
        return created

    def _create_body(self, node_config: Dict[str, Any], tags: Dict[str, str], token: str) -> Dict[str, Any]:
        body = {k: v for k, v in node_config.items() if k not in PROVIDER_ONLY_NODE_KEYS}
        body["name"] = encode_pod_name(tags, token)
        ports = list(body.get("ports") or [])
        if "22/tcp" not in ports:
            ports.append("22/tcp")
        body["ports"] = ports
        body.setdefault("globalNetworking", True)
        env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
        public_key = self.provider_config.get("ssh_public_key")
        if public_key:
            env["PUBLIC_KEY"] = public_key.strip()
        if tags.get(TAG_RAY_NODE_KIND) == NODE_KIND_HEAD and self.provider_config.get("head_api_key", True):
            # The head's autoscaler calls the API: the key travels in the head pod's env
            # (never in the YAML, the bootstrap config or a file we write).
            env[API_KEY_ENV] = os.environ.get(API_KEY_ENV, "")
            if os.environ.get(BASE_URL_ENV):
                env[BASE_URL_ENV] = os.environ[BASE_URL_ENV]
        body["env"] = env
        return body

    def _terminate_by_token(self, token: str) -> None:
        try:
            pods = self.client.list_pods()
        except RunPodError as exc:
            logger.error("Could not check for a half-created pod after a failed create: %s", exc)
            return
        for pod in pods:
            decoded = decode_pod_name(pod.get("name", ""))
            if decoded and decoded[1] == token:
                logger.warning("Terminating pod %s left by a failed create call", pod["id"])
                self.terminate_node(pod["id"])

    def set_node_tags(self, node_id: str, tags: Dict[str, str]) -> None:
        with self._lock:
            current = dict(self._tags.get(node_id) or {})
        if not current:
            pod = self._pod(node_id)
            if pod is None:
                raise RunPodNotFound("updatePod", 404, "Not Found", f"pod {node_id} not found")
            with self._lock:
                current = dict(self._tags.get(node_id) or {})
        merged = dict(current)
        merged.update(tags)
        if merged == current:
            return
        pod = self.client.update_pod(node_id, {"name": encode_pod_name(merged)})
        self._remember(pod)

    def terminate_node(self, node_id: str) -> Optional[Dict[str, Any]]:
        try:
            self.client.delete_pod(node_id)
        except RunPodNotFound:
            pass
        logger.info("Terminated RunPod pod %s", node_id)
        self._forget(node_id)
        return None

    def terminate_nodes(self, node_ids: List[str]) -> Optional[Dict[str, Any]]:
        for node_id in node_ids:
            self.terminate_node(node_id)
        return None

    # -- launcher hooks -----------------------------------------------------------------

    @staticmethod
    def bootstrap_config(cluster_config: Dict[str, Any]) -> Dict[str, Any]:
        """Store the public key's text in the provider config (the head has no .pub)."""
        config = dict(cluster_config)
        provider = dict(config.get("provider") or {})
        if not provider.get("ssh_public_key"):
            path = provider.get("ssh_public_key_path")
            if not path:
                private = (config.get("auth") or {}).get("ssh_private_key")
                path = f"{private}.pub" if private else None
            if path:
                full = os.path.expanduser(path)
                if not os.path.exists(full):
                    raise FileNotFoundError(
                        f"provider.ssh_public_key_path: {path} does not exist; pods get this "
                        "key as PUBLIC_KEY. Create it with ssh-keygen -y -f <private key>."
                    )
                with open(full) as handle:
                    provider["ssh_public_key"] = handle.read().strip()
        config["provider"] = provider
        return config

    def get_command_runner(
        self,
        log_prefix: str,
        node_id: str,
        auth_config: Dict[str, Any],
        cluster_name: str,
        process_runner: Any,
        use_internal_ip: bool,
        docker_config: Optional[Dict[str, Any]] = None,
    ):
        if docker_config and docker_config.get("container_name"):
            raise ValueError(
                "docker: RunPod pods are containers already; remove the `docker` section "
                "from the cluster file."
            )
        return RunPodCommandRunner(
            log_prefix=log_prefix,
            node_id=node_id,
            provider=self,
            auth_config=auth_config,
            cluster_name=cluster_name,
            process_runner=process_runner,
            use_internal_ip=use_internal_ip,
        )
