"""Fixtures for the sweep tests: one local Ray per test module, tiny sweep files in tmp dirs.

Test modules that start Ray use ``local_ray`` (module-scoped: one cluster per module, shut down
after its last test). Ray workers import the tests' reward functions by import path, so this
folder goes on PYTHONPATH before Ray starts; workers inherit the environment of the raylet.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _sweep_helpers import worker_env  # noqa: E402


@pytest.fixture(scope="module")
def worker_pythonpath():
    """PYTHONPATH for Ray workers started in this module (restored afterwards)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = worker_env()["PYTHONPATH"]
    yield os.environ["PYTHONPATH"]
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def local_ray(worker_pythonpath):
    """An embedded local Ray with 2 CPUs and no GPU, shut down after the module's tests."""
    import ray

    if ray.is_initialized():  # a previous module must not leak its cluster into this one
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
