"""Fixtures for the fault tests: the sweep helpers on sys.path, and Ray processes tracked by a marker.

The sweep helpers (tiny run configs, sweep files, slow rewards) live in tests/sweeps; that folder
goes on sys.path here as tests/sweeps/conftest.py does for its own tests, and on PYTHONPATH for the
Ray workers and driver subprocesses these tests start.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWEEP_TESTS = HERE.parent / "sweeps"
for folder in (SWEEP_TESTS, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
