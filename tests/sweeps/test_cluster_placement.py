"""Placement on a two-node ``ray.cluster_utils.Cluster``: a CPU-only head and a node declaring one GPU.

The GPU is declared, not real: the trainable asks torch for CUDA only when it is available, so the
GPU trials compute on CPU here; what is tested is where and when Ray places them.
"""

from __future__ import annotations

import pytest

from _sweep_helpers import stage, stage_status, write_sweep
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep


@pytest.fixture(scope="module")
def two_node_cluster(worker_pythonpath):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, gpu_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_smoke_trials_finish_before_gpu_trials_start_and_gpu_trials_run_on_the_gpu_node(two_node_cluster, tmp_path):
    from ray import tune

    cluster, gpu_node_id = two_node_cluster
    path = write_sweep(
        tmp_path,
        [
            stage("smoke", num_samples=3, epochs=2, max_concurrent_trials=2),
            stage("hisso", resources={"cpu": 1, "gpu": 1}, num_samples=2, epochs=2),
        ],
    )
    sweep_dir = tmp_path / "out" / "cluster"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)
    assert [r.passed for r in results] == [True, True]
    assert results[1].ran_on_cpu is False  # the cluster has a GPU: no CPU fallback

    smoke = tune.ExperimentAnalysis(str(sweep_dir / "smoke"))
    gpu = tune.ExperimentAnalysis(str(sweep_dir / "hisso"))
    smoke_results = [r for t in smoke.trials for r in smoke.trial_dataframes[t.trial_id].to_dict("records")]
    gpu_results = [r for t in gpu.trials for r in gpu.trial_dataframes[t.trial_id].to_dict("records")]
    assert len(smoke.trials) == 3 and len(gpu.trials) == 2
    assert len(smoke_results) == 6 and len(gpu_results) == 4  # one result per epoch

    last_smoke_report = max(r["reported_at"] for r in smoke_results)
    first_gpu_start = min(r["trial_started_at"] for r in gpu_results)
    assert last_smoke_report < first_gpu_start

    assert {r["node_id"] for r in gpu_results} == {gpu_node_id}
    status = stage_status(sweep_dir, "hisso")
    assert {t["node_id"] for t in status["trials"]} == {gpu_node_id}
    assert {t["outcome"] for t in status["trials"]} == {"SUCCESS"}
    # One GPU in the cluster: the two GPU trials ran one after the other, never side by side.
    spans = sorted(
        (min(r["trial_started_at"] for r in rows), max(r["reported_at"] for r in rows))
        for rows in ([r for r in gpu_results if r["trial_id"] == t.trial_id] for t in gpu.trials)
    )
    assert spans[0][1] <= spans[1][0]
