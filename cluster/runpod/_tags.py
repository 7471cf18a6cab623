"""Ray node tags kept in the pod's name, so every provider instance sees the same tags.

RunPod pods carry no labels, and a PATCH of `env` replaces the container's environment
(applied on restart), while a PATCH of `name` changes nothing on the running pod. So the
tags live in the name: a readable prefix, `~`, then the tags as compact JSON, zlib'd and
base64url'd. A restarted head or a second `ray up` decodes the same tags from the API.

    ray-psann-gpu-gpu_worker~eJyrVkp...
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from typing import Dict, Optional, Tuple

from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE

SEPARATOR = "~"
# The payload keeps Ray's tags and our create token (one create call, for leak recovery) apart,
# so no tag name can be mistaken for the token: {"t": {tag: value}, "k": token}.
_TAGS_KEY, _TOKEN_KEY = "t", "k"


def encode_pod_name(tags: Dict[str, str], create_token: str = "") -> str:
    """Pod name carrying `tags` (and an optional create token)."""
    label = "-".join(
        part for part in (
            "ray",
            tags.get(TAG_RAY_CLUSTER_NAME, ""),
            tags.get(TAG_RAY_USER_NODE_TYPE) or tags.get(TAG_RAY_NODE_KIND, ""),
        ) if part
    )
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", label)[:60]
    payload: Dict[str, object] = {_TAGS_KEY: dict(tags)}
    if create_token:
        payload[_TOKEN_KEY] = create_token
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    packed = base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")
    return f"{label}{SEPARATOR}{packed}"


def decode_pod_name(name: str) -> Optional[Tuple[Dict[str, str], str]]:
    """(tags, create_token) from a pod name, or None for pods this provider did not make."""
    if not isinstance(name, str) or SEPARATOR not in name:
        return None
    packed = name.rsplit(SEPARATOR, 1)[1]
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
        payload = json.loads(raw)
    except (ValueError, zlib.error):
        return None
    if not isinstance(payload, dict):
        return None
    tags, token = payload.get(_TAGS_KEY), payload.get(_TOKEN_KEY, "")
    if not isinstance(tags, dict) or not isinstance(token, str):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        return None
    return tags, token
