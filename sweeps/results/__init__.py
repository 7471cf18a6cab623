"""Arrow results store: ingest sweep folders into Parquet tables and query them.

    python -m sweeps.results ingest runs/sweeps/hisso_wave
    python -m sweeps.results query runs/sweeps/hisso_wave --where "status == 'SUCCESS'" \
        --sort val_loss --top 10
    python -m sweeps.results query runs/sweeps/hisso_wave --top 5          # best by the ranking rule
    python -m sweeps.results query runs/sweeps/hisso_wave --by-config     # mean over repeats
    python -m sweeps.results summary runs/sweeps/hisso_wave
    python -m sweeps.results export runs/sweeps/hisso_wave --out exported/   # the winner, rerunnable

The tables are documented in docs/results.md. Importing this package loads pyarrow, never torch,
Ray or DuckDB (imported by the first filter, sort or SQL query).
"""

from ._best import BestTrial, best_trial_row, export_best, load_best
from ._ingest import IngestReport, ingest_sweep
from ._lock import IngestLockedError
from ._query import load_equity, load_events, load_trials, query, sql, summarize_configs, summary
from ._schema import TRIAL_STATUSES, SchemaConflictError
from ._where import WhereError

__all__ = [
    "BestTrial",
    "IngestLockedError",
    "IngestReport",
    "SchemaConflictError",
    "TRIAL_STATUSES",
    "WhereError",
    "best_trial_row",
    "export_best",
    "ingest_sweep",
    "load_best",
    "load_equity",
    "load_events",
    "load_trials",
    "query",
    "sql",
    "summarize_configs",
    "summary",
]
