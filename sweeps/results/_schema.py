"""Column vocabulary of the results tables: names, Arrow types, and how values are flattened.

The run contract (docs/run_outputs.md) fixes the types of the metrics.json keys and the
events.csv columns; they are declared here once so that every trial, including one whose
values are all null, gets the same column types.  Anything outside the contract (a new metric,
a sampled parameter) gets a type inferred from its values and unified across trials.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

import pyarrow as pa

# Bumped whenever ingest derives different rows from the same files, so that older tables are
# re-read instead of being kept as "unchanged".
FORMAT_VERSION = "1"

TRIAL_STATUSES = ("SUCCESS", "PRUNED", "ERROR", "HUNG", "INCOMPLETE", "RUNNING", "INTERRUPTED")
# stage_status.json outcomes: the contract names the first four; the runner may also write
# INCOMPLETE (a trial Tune ended with no usable status), and any status is accepted.
RUNNER_OUTCOMES = TRIAL_STATUSES
RUN_STATUS_TO_STATUS = {
    "running": "RUNNING",
    "success": "SUCCESS",
    "error": "ERROR",
    "interrupted": "INTERRUPTED",
}

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
TIMESTAMP = pa.timestamp("us", tz="UTC")

# events.csv, in the contract's fixed column order.
EVENT_CSV_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("timestamp", TIMESTAMP),
    ("elapsed_seconds", F64),
    ("event", STR),
    ("phase", STR),
    ("epoch", I64),
    ("train_loss", F64),
    ("val_loss", F64),
    ("val_mse", F64),
    ("reward_mean", F64),
    ("reward_std", F64),
    ("lr", F64),
    ("episodes", I64),
    ("episodes_per_second", F64),
    ("samples_per_second", F64),
    ("data_seconds", F64),
    ("forward_seconds", F64),
    ("backward_seconds", F64),
    ("optimizer_seconds", F64),
    ("message", STR),
)
EVENT_KEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sweep", STR),
    ("stage", STR),
    ("trial_id", STR),
    ("seq", I64),  # 0-based position of the row in the trial's events.csv
)

_PORTFOLIO_METRICS = ("cum_return", "log_return", "sharpe", "max_drawdown", "turnover")

# metrics.json keys (flattened with "_") and their contract types.  `status` and `error` are
# stored as run_status and (part of) error, because the trials table has its own columns of
# those names.
METRIC_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("run_name", STR),
    ("config_path", STR),
    ("estimator", STR),
    ("loss_kind", STR),
    ("train_loss", F64),
    ("val_loss", F64),
    ("test_loss", F64),
    ("val_mse", F64),
    ("test_mse", F64),
    ("test_reward_full", F64),
    ("best_epoch", I64),
    ("epochs_run", I64),
    ("epochs_planned", I64),
    ("reward", STR),
    ("reward_mean", F64),
    ("reward_std", F64),
    ("episodes", I64),
    ("transition_penalty", F64),
    ("device", STR),
    ("seed", I64),
    ("duration_seconds", F64),
    ("throughput_eps_per_sec", F64),
    ("amp_enabled", BOOL),
    ("amp_dtype", STR),
    ("amp_skipped_steps", I64),
    ("portfolio_split", STR),
    ("portfolio_trans_cost", F64),
    *(
        (f"portfolio_{who}_{metric}", F64)
        for who in ("policy", "equal_weight", "best_buy_and_hold")
        for metric in _PORTFOLIO_METRICS
    ),
    ("portfolio_best_buy_and_hold_asset", I64),
)

# Columns every trials table starts with, in order.
TRIAL_HEAD_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sweep", STR),
    ("stage", STR),
    ("trial_id", STR),
    ("trial_dir", STR),
    ("status", STR),
    ("outcome", STR),  # the sweep runner's verdict from stage_status.json
    ("tune_status", STR),
    ("run_status", STR),  # metrics.json "status" as written by the run
    ("error", STR),
)
# Derived from events.csv and stage_status.json; they follow the metrics.
TRIAL_DERIVED_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("main_phase", STR),
    ("best_val_loss", F64),
    ("best_val_loss_epoch", I64),
    ("final_train_loss", F64),
    ("final_val_loss", F64),
    ("final_val_mse", F64),
    ("final_reward_mean", F64),
    ("final_lr", F64),
    ("last_epoch", I64),
    ("epochs_logged", I64),
    ("events_count", I64),
    ("warnings_count", I64),
    ("first_event_at", TIMESTAMP),
    ("last_event_at", TIMESTAMP),
    ("last_event", STR),
    ("last_message", STR),
    ("iterations", I64),
    ("max_epochs", I64),
    ("node_id", STR),
    ("hung_last_events", STR),
)
TRIAL_TAIL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("source_fingerprint", STR),  # size and mtime of the files read; drives incremental ingest
    ("ingest_notes", STR),  # problems met while reading this trial (never fatal)
)

KNOWN_TRIAL_TYPES: dict[str, pa.DataType] = dict(
    TRIAL_HEAD_COLUMNS + METRIC_COLUMNS + TRIAL_DERIVED_COLUMNS + TRIAL_TAIL_COLUMNS
)
KNOWN_EVENT_TYPES: dict[str, pa.DataType] = dict(EVENT_KEY_COLUMNS + EVENT_CSV_COLUMNS)


class SchemaConflictError(ValueError):
    """Two trials (or a trial and the existing tables) disagree on a column's type."""


def param_column(dotted_key: str) -> str:
    """Column name of a config parameter: ``estimator.params.lr`` -> ``params_estimator__params__lr``."""
    return "params_" + dotted_key.replace(".", "__")


def flatten(obj: Mapping[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings, joining keys with `sep`; other values are kept as they are."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


def scalar_value(value: Any) -> Any:
    """A value storable in a scalar column: containers become canonical JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def infer_type(value: Any) -> pa.DataType:
    """Arrow type of one scalar value (after scalar_value)."""
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return I64
    if isinstance(value, float):
        return F64
    return STR


def merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type that holds both, or None on a conflict (int and float widen to float)."""
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return F64 if (pa.types.is_floating(a) or pa.types.is_floating(b)) else I64
    return None


def coerce_known(value: Any, type_: pa.DataType) -> tuple[Any, str | None]:
    """Fit a metrics.json value to its contract type; a misfit becomes null plus a note."""
    if value is None:
        return None, None
    if type_ == F64:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
    elif type_ == I64:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value), None
    elif type_ == BOOL:
        if isinstance(value, bool):
            return value, None
    elif type_ == STR:
        if isinstance(value, str):
            return value, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
    return None, f"expected {type_}, got {type(value).__name__} {value!r:.60}"


def unify_columns(
    named_types: Iterable[tuple[str, pa.DataType, str]],
) -> dict[str, pa.DataType]:
    """Unify (column, type, where-seen) triples into one type per column.

    Raises SchemaConflictError naming the column and where each conflicting type was seen.
    """
    types: dict[str, pa.DataType] = {}
    seen_at: dict[str, str] = {}
    for name, type_, where in named_types:
        if name not in types:
            types[name], seen_at[name] = type_, where
            continue
        merged = merge_types(types[name], type_)
        if merged is None:
            raise SchemaConflictError(
                f"column {name!r} has conflicting types: {types[name]} in {seen_at[name]} and "
                f"{type_} in {where}; the tables were left unchanged (make the values agree, "
                f"e.g. write the metric as a number in every trial)"
            )
        if not pa.types.is_null(type_) and merged != types[name]:
            seen_at[name] = where
        types[name] = merged
    return types


def order_trial_columns(names: Iterable[str]) -> list[str]:
    """Stable column order: contract columns, then params_* and other columns sorted."""
    names = set(names)
    fixed = [n for n, _ in TRIAL_HEAD_COLUMNS + METRIC_COLUMNS + TRIAL_DERIVED_COLUMNS]
    tail = [n for n, _ in TRIAL_TAIL_COLUMNS]
    rest = names - set(fixed) - set(tail)
    params = sorted(n for n in rest if n.startswith("params_"))
    extra = sorted(n for n in rest if not n.startswith("params_"))
    return [n for n in fixed if n in names] + params + extra + [n for n in tail if n in names]


def order_event_columns(names: Iterable[str]) -> list[str]:
    names = set(names)
    fixed = [n for n, _ in EVENT_KEY_COLUMNS + EVENT_CSV_COLUMNS]
    return [n for n in fixed if n in names] + sorted(names - set(fixed))
