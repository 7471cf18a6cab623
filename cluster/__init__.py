"""Ray cluster support for psann-sweeps (imports neither psann nor sweeps)."""

from cluster.runpod import RunPodClient, RunPodNodeProvider

__all__ = ["RunPodClient", "RunPodNodeProvider"]
