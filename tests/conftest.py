"""Shared test settings.

Tiny networks gain nothing from intra-op threads, and on a 2-core machine shared with Ray workers
the thread pool's contention makes them many times slower, so tests run torch single-threaded.

Tests name their own helper callables in configs (``test_rewards:reward_with_kwargs``), so the test
modules are trusted for the whole session, as a user trusts a module with ``--trust`` or
``PSANN_TRUST`` (psann._imports); the environment variable reaches the Ray workers the tests start.
Tests of the refusal itself clear it with monkeypatch.
"""

import os
from pathlib import Path

import torch

torch.set_num_threads(1)

_TESTS = Path(__file__).resolve().parent
_TEST_MODULES = sorted({p.stem for p in _TESTS.rglob("*.py") if p.stem != "__init__"} | {"tests"})
os.environ["PSANN_TRUST"] = ",".join(
    dict.fromkeys([m for m in os.environ.get("PSANN_TRUST", "").split(",") if m] + _TEST_MODULES)
)
