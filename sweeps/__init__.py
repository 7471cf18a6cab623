"""sweeps: staged Ray Tune sweeps of psann runs, the Arrow results store and the compendium.

Public names load their module on first use (PEP 562): ``import sweeps.results`` reads Parquet
without importing torch (through ``sweeps.spec``) or Ray (through ``sweeps.stages``). Ray is
imported only by the modules that drive it (``sweeps.stages``, ``sweeps.trainable``,
``sweeps.trial_checkpoints``, ``sweeps.budget_guard``, ``sweeps.wrapped_scheduler``,
``sweeps.watchdog``, ``sweeps.heartbeat``, ``sweeps.evaluate``).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "build_compendium": "sweeps.compendium",
    "IngestReport": "sweeps.results",
    "SchemaConflictError": "sweeps.results",
    "WhereError": "sweeps.results",
    "ingest_sweep": "sweeps.results",
    "load_equity": "sweeps.results",
    "load_events": "sweeps.results",
    "load_trials": "sweeps.results",
    "summarize_configs": "sweeps.results",
    "ReportSpec": "sweeps.spec",
    "SchedulerSpec": "sweeps.spec",
    "StageSpec": "sweeps.spec",
    "SweepError": "sweeps.spec",
    "SweepSpec": "sweeps.spec",
    "load_sweep": "sweeps.spec",
    "validate_trial_configs": "sweeps.spec",
    "run_sweep": "sweeps.stages",
    "evaluate_top_trials": "sweeps.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
