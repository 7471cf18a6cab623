"""sweeps: staged Ray Tune sweeps of psann runs, the Arrow results store and the compendium.

Ray is imported only by the modules that drive it (``sweeps.stages``, ``sweeps.trainable``,
``sweeps.watchdog``); the spec, results and compendium modules work without starting Ray.
"""

from sweeps.compendium import build_compendium
from sweeps.results import IngestReport, SchemaConflictError, WhereError, ingest_sweep, load_events, load_trials
from sweeps.spec import SchedulerSpec, StageSpec, SweepError, SweepSpec, load_sweep, validate_trial_configs

__all__ = [
    "IngestReport",
    "SchedulerSpec",
    "SchemaConflictError",
    "StageSpec",
    "SweepError",
    "SweepSpec",
    "WhereError",
    "build_compendium",
    "ingest_sweep",
    "load_events",
    "load_sweep",
    "load_trials",
    "run_sweep",
    "validate_trial_configs",
]


def __getattr__(name: str):
    # run_sweep pulls in Ray; import it only when asked for.
    if name == "run_sweep":
        from sweeps.stages import run_sweep

        return run_sweep
    raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
