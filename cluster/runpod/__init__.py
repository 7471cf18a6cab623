"""RunPod support for Ray's cluster launcher: a REST API v2 client and a node provider.

`ray up cluster/runpod.yaml` loads `cluster.runpod.RunPodNodeProvider`;
`python -m cluster.runpod check cluster/runpod.yaml` validates a launcher file.
"""

from cluster.runpod._client import (
    POD_STATUSES,
    RetryPolicy,
    RunPodAPIError,
    RunPodAuthError,
    RunPodClient,
    RunPodConfigError,
    RunPodError,
    RunPodNotFound,
    RunPodTransportError,
)
from cluster.runpod._provider import RunPodNodeProvider
from cluster.runpod._runner import RunPodCommandRunner
from cluster.runpod._tags import decode_pod_name, encode_pod_name

__all__ = [
    "RunPodCommandRunner",
    "RunPodNodeProvider",
    "decode_pod_name",
    "encode_pod_name",
    "POD_STATUSES",
    "RetryPolicy",
    "RunPodAPIError",
    "RunPodAuthError",
    "RunPodClient",
    "RunPodConfigError",
    "RunPodError",
    "RunPodNotFound",
    "RunPodTransportError",
]
