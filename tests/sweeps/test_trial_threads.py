"""A trial's torch threads follow its CPU grant, whatever OMP_NUM_THREADS the workers inherit."""

from __future__ import annotations

import json

import pytest

from _sweep_helpers import stage, trial_dirs, worker_env, write_sweep
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep
from sweeps.trainable import torch_threads_for


@pytest.fixture(scope="module")
def ray_with_two_omp_threads():
    """A local Ray whose workers start with OMP_NUM_THREADS=2 (as a user's shell may set it)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = {"OMP_NUM_THREADS": "2", "PYTHONPATH": worker_env()["PYTHONPATH"]}
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("cpu, threads", [(0.5, 1), (1, 1), (1.9, 1), (2, 2), (7.5, 7)])
def test_threads_are_the_floor_of_the_cpu_grant_and_at_least_one(cpu, threads):
    assert torch_threads_for(cpu) == threads


def test_a_trial_granted_one_cpu_trains_with_one_torch_thread(ray_with_two_omp_threads, tmp_path):
    path = write_sweep(tmp_path, [stage("smoke", num_samples=1, epochs=1, resources={"cpu": 1, "gpu": 0})])
    sweep_dir = tmp_path / "out" / "threads"
    run_sweep(load_sweep(path), sweep_dir, verbose=0)
    (trial_dir,) = trial_dirs(sweep_dir, "smoke")
    assert json.loads((trial_dir / "metrics.json").read_text())["threads"] == 1
