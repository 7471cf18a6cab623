"""Column vocabulary of the results tables: names, Arrow types, and how values are flattened.

The run contract (``psann.contract``, docs/run_outputs.md) names the metrics.json keys, the
events.csv columns and the trial statuses, with a kind for each value; here the kinds become Arrow
types, so that every trial, including one whose values are all null, gets the same column types.
Anything outside the contract (a new metric, a sampled parameter) gets a type inferred from its
values and unified across trials.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, Iterable

import pyarrow as pa

from psann import contract as C
from psann.provenance import PROVENANCE_FIELDS

# Bumped whenever ingest derives different rows from the same files, so that older tables are
# re-read instead of being kept as "unchanged".
FORMAT_VERSION = "4"  # 2: val_loss_smoothed, config_id, repeat, search, eval_*, the equity table;
# 3: provenance_* and stage_status; 4: error_kind, malformed values as null plus a note

# Re-exported for readers of this package (sweeps.results.TRIAL_STATUSES); defined in the contract.
TRIAL_STATUSES = C.TRIAL_STATUSES
# stage_status.json outcomes accepted from the runner: any trial status (the runner writes
# C.trial_outcome's five).
RUNNER_OUTCOMES = C.TRIAL_STATUSES
RUN_STATUS_TO_STATUS = C.RUN_STATUS_TO_TRIAL_STATUS

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()
TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES: dict[str, pa.DataType] = {C.FLOAT: F64, C.INT: I64, C.STR: STR, C.BOOL: BOOL, C.TIMESTAMP: TIMESTAMP}


def _typed(fields: Iterable[tuple[str, str]]) -> tuple[tuple[str, pa.DataType], ...]:
    return tuple((name, ARROW_TYPES[kind]) for name, kind in fields)


# events.csv and equity_<split>.csv, in the contract's fixed column order.
EVENT_CSV_COLUMNS: tuple[tuple[str, pa.DataType], ...] = _typed(C.EVENT_FIELDS)
EVENT_KEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sweep", STR),
    ("stage", STR),
    ("trial_id", STR),
    ("seq", I64),  # 0-based position of the row in the trial's events.csv
)
EQUITY_KEY_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("sweep", STR),
    ("stage", STR),
    ("trial_id", STR),
    ("source", STR),  # "run" (equity_<split>.csv) or "evaluation" (evaluation_equity_<split>.csv)
    ("split", STR),
)
EQUITY_CSV_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (name, I64 if name == "step" else F64) for name in C.EQUITY_COLUMNS
)
EQUITY_SOURCES = ("run", "evaluation")

# metrics.json keys (flattened with "_") and their contract types.  `status` and `error` are
# stored as run_status and (part of) error, because the trials table has its own columns of
# those names (METRICS_KEY_COLUMNS).
# metrics.json "provenance" (psann.provenance.PROVENANCE_FIELDS) flattened the same way: the
# provenance_* columns, typed here whether or not the contract lists "provenance" yet.
PROVENANCE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    (f"provenance_{name}", ARROW_TYPES[kind]) for name, kind in PROVENANCE_FIELDS
)
METRIC_COLUMNS: tuple[tuple[str, pa.DataType], ...] = tuple(
    column for column in _typed(C.METRIC_COLUMNS) if not column[0].startswith("provenance_")
) + PROVENANCE_COLUMNS
# metrics.json "error_kind" (psann.contract.ERROR_KINDS), typed here whether or not the contract
# lists it yet, so that tables have the column either way.
if "error_kind" not in dict(METRIC_COLUMNS):
    METRIC_COLUMNS += (("error_kind", STR),)
ERROR_KINDS: tuple[str, ...] = tuple(getattr(C, "ERROR_KINDS", ()))  # empty: any string accepted

# Parquet and Arrow integers are 64-bit; a larger JSON integer becomes null plus a note.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# JSON nested deeper than this (below the file's top level) becomes null plus a note: a metric
# or parameter is never that deep, and flattening it would exhaust the interpreter's stack.
MAX_JSON_DEPTH = 32
METRICS_KEY_COLUMNS = {"status": "run_status", "error": "error"}

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
# The ranking rule's columns (psann.contract): the value a trial is ranked by, the window it was
# computed with, the configuration and repeat the trial ran, and the sweep's search algorithm.
TRIAL_RANK_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("val_loss_smoothed", F64),
    ("rank_window", I64),
    ("config_id", STR),
    ("repeat", I64),
    ("search", STR),
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
    ("stage_status", STR),  # stage_status.json "status" of the trial's stage, as the runner wrote it
)


# evaluation.json's stage and trial_id name the row itself (checked, not stored); its split is
# eval_data_split because eval_split is metrics.json's.
EVALUATION_ROW_KEYS = ("stage", "trial_id")
EVALUATION_RENAMED = {"split": "eval_data_split"}


def _evaluation_columns() -> tuple[tuple[str, pa.DataType], ...]:
    columns: list[tuple[str, pa.DataType]] = []
    for name, kind in C.EVALUATION_FIELDS:
        if name in EVALUATION_ROW_KEYS:
            continue
        if kind == C.OBJECT:  # portfolio, flattened like metrics.json's
            columns.extend((f"eval_{name}_{inner}", ARROW_TYPES[k]) for inner, k in C.PORTFOLIO_FIELDS)
        else:
            columns.append((EVALUATION_RENAMED.get(name, f"eval_{name}"), ARROW_TYPES[kind]))
    return tuple(columns)


# evaluation.json flattened with "_" and prefixed eval_ (null when the trial has none).
EVALUATION_COLUMNS: tuple[tuple[str, pa.DataType], ...] = _evaluation_columns()

TRIAL_TAIL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("source_fingerprint", STR),  # size and mtime of the files read; drives incremental ingest
    ("ingest_notes", STR),  # problems met while reading this trial (never fatal)
)

KNOWN_TRIAL_TYPES: dict[str, pa.DataType] = dict(
    TRIAL_HEAD_COLUMNS + TRIAL_RANK_COLUMNS + METRIC_COLUMNS + TRIAL_DERIVED_COLUMNS
    + EVALUATION_COLUMNS + TRIAL_TAIL_COLUMNS
)
KNOWN_EVENT_TYPES: dict[str, pa.DataType] = dict(EVENT_KEY_COLUMNS + EVENT_CSV_COLUMNS)
KNOWN_EQUITY_TYPES: dict[str, pa.DataType] = dict(EQUITY_KEY_COLUMNS + EQUITY_CSV_COLUMNS)


class SchemaConflictError(ValueError):
    """Two trials (or a trial and the existing tables) disagree on a column's type."""


def param_column(dotted_key: str) -> str:
    """Column name of a config parameter: ``estimator.params.lr`` -> ``params_estimator__params__lr``."""
    return "params_" + dotted_key.replace(".", "__")


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
            if not INT64_MIN <= value <= INT64_MAX:
                return None, f"integer {_short_int(value)} is beyond int64"
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
    elif type_ == TIMESTAMP:
        if isinstance(value, str):
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                return None, f"expected an ISO 8601 date-time, got {value!r:.60}"
            # A time without an offset is read as UTC, as the run contract writes UTC.
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)), None
    return None, f"expected {type_}, got {type(value).__name__} {value!r:.60}"


def _short_int(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def storable(value: Any) -> tuple[Any, str | None]:
    """``value`` if Arrow can store it in a column of its inferred type, else (None, why not).

    Catches what JSON allows and Arrow does not: integers beyond int64 and strings that are not
    valid UTF-8 (a lone surrogate escape such as ``"\\ud800"``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            return None, f"integer {_short_int(value)} is beyond int64"
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None, f"text {value!r:.60} is not valid UTF-8"
    return value, None


_NON_FINITE_TEXT = frozenset({"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})


def extra_value(value: Any) -> tuple[Any, str | None]:
    """A value of a column outside the contract (type inferred across trials): scalar_value,
    except that text spelling a non-finite number ("NaN", "Infinity") is null with a reason, so
    that one trial writing NaN as a string does not make its column conflict with the others."""
    if isinstance(value, str) and value.strip().lower() in _NON_FINITE_TEXT:
        return None, f"{value!r} is text, not a number"
    return scalar_value(value), None


def clip_depth(obj: Any, limit: int = MAX_JSON_DEPTH) -> tuple[Any, list[str]]:
    """``obj`` with every container nested deeper than ``limit`` replaced by None, and the dotted
    paths replaced (iterative, so any depth json.loads returned is safe)."""
    clipped: list[str] = []

    def walk(node: Any, path: str, depth: int) -> Any:
        # Recursion is bounded by `limit`: a deeper container is cut before it is entered.
        if isinstance(node, (dict, list)) and depth >= limit:
            clipped.append(path or "(top level)")
            return None
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        return node

    return walk(obj, "", 0), clipped


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
    fixed = [n for n, _ in TRIAL_HEAD_COLUMNS + TRIAL_RANK_COLUMNS + METRIC_COLUMNS + TRIAL_DERIVED_COLUMNS
             + EVALUATION_COLUMNS]
    tail = [n for n, _ in TRIAL_TAIL_COLUMNS]
    rest = names - set(fixed) - set(tail)
    params = sorted(n for n in rest if n.startswith("params_"))
    extra = sorted(n for n in rest if not n.startswith("params_"))
    return [n for n in fixed if n in names] + params + extra + [n for n in tail if n in names]


def order_event_columns(names: Iterable[str]) -> list[str]:
    names = set(names)
    fixed = [n for n, _ in EVENT_KEY_COLUMNS + EVENT_CSV_COLUMNS]
    return [n for n in fixed if n in names] + sorted(names - set(fixed))


def order_equity_columns(names: Iterable[str]) -> list[str]:
    names = set(names)
    fixed = [n for n, _ in EQUITY_KEY_COLUMNS + EQUITY_CSV_COLUMNS]
    return [n for n in fixed if n in names] + sorted(names - set(fixed))
