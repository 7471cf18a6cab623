"""Finding trial folders in a sweep and reading one trial folder into a row and its events.

What is read, per trial folder (docs/run_outputs.md is the contract):
- metrics.json, params.json and evaluation.json: single JSON objects, parsed with json.loads on
  the bytes (pyarrow.json reads only newline-delimited JSON, and Tune writes params.json indented);
- events.csv and equity_<split>.csv / evaluation_equity_<split>.csv: pyarrow.csv with the
  contract's explicit column types;
- config_resolved.yaml: only for plain run folders without params.json, as their parameters;
- <stage>/stage_status.json: the sweep runner's verdict per trial, and the stage's own status;
- <sweep>/sweep.json: the ranking window, the search algorithm and the driver's git facts
  (provenance), once per sweep (both parsed in _stage_status).
Nothing here raises on a bad file: problems become an INCOMPLETE status or an ingest note.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from psann import contract as C
from psann.contract import ERROR, HUNG, INCOMPLETE, flatten_keys
from psann.errors import short_repr

from . import _schema as S
from . import _store
from ._evaluation import equity_files, equity_table, evaluation_columns
from ._ranking import configuration, ranking_value
from ._stage_status import DEFAULT_SEARCH, SWEEP_FILE, SweepSettings, _apply_stage_status, read_sweep_settings

# SWEEP_FILE, DEFAULT_SEARCH, SweepSettings and read_sweep_settings live in _stage_status; they are
# still importable from here.
__all__ = ["DEFAULT_SEARCH", "FINGERPRINT_FILES", "RUNS_STAGE", "RUN_FILES", "SWEEP_FILE", "Stage", "SweepSettings",
           "TrialRead", "TrialSource", "discover", "fingerprint", "read_sweep_settings", "read_trial", "trial_id_of"]

logger = logging.getLogger(__name__)

RUN_FILES = frozenset({"metrics.json", "events.csv", "config_resolved.yaml", "params.json", "result.json", "progress.csv"})
FINGERPRINT_FILES = ("metrics.json", "events.csv", "params.json", "config_resolved.yaml", "error.txt",
                     C.EVALUATION_FILE)
RUNS_STAGE = "runs"
# Tune's default trial folder: <trainable>_<5 hex>_<5 digits>_<tag>_<date>.
_TUNE_TRIAL_ID = re.compile(r"(?:^|_)([0-9a-f]{5}_\d{5})(?:_|$)")


class TrialRead(NamedTuple):
    """One trial folder read: its trials row, its events rows and its equity rows."""

    row: dict[str, Any]
    events: pa.Table | None
    equity: pa.Table | None

@dataclass
class TrialSource:
    stage: str
    dir_name: str
    path: str
    files: dict[str, pafs.FileInfo]
    runner: dict[str, Any] | None = None
    max_epochs: int | None = None
    stage_status: str | None = None  # stage_status.json "status" (the stage's, carried unchanged)
    folder_missing: bool = False
    fingerprint: str = ""


@dataclass
class Stage:
    name: str
    sources: list[TrialSource] = field(default_factory=list)


# --------------------------------------------------------------------------- discovery


def discover(fs: pafs.FileSystem, root: str, warnings: list[str]) -> dict[str, Stage]:
    top = _store.list_dir(fs, root)
    top_files = {i.base_name for i in top if i.type == pafs.FileType.File}
    if top_files & {"metrics.json", "events.csv", "config_resolved.yaml"}:
        raise ValueError(
            f"{root!r} is a single run folder (it holds {sorted(top_files & RUN_FILES)}); "
            f"ingest the folder that contains it"
        )
    if "stage_status.json" in top_files:
        raise ValueError(
            f"{root!r} is a stage folder (it holds stage_status.json); ingest the sweep folder "
            f"that contains it"
        )
    stages: dict[str, Stage] = {}
    for child in sorted(top, key=lambda i: i.base_name):
        if child.type != pafs.FileType.Directory or _skipped(child.base_name):
            continue
        listing = {i.base_name: i for i in _store.list_dir(fs, child.path)}
        if set(listing) & RUN_FILES:
            stages.setdefault(RUNS_STAGE, Stage(RUNS_STAGE)).sources.append(
                TrialSource(RUNS_STAGE, child.base_name, child.path, listing)
            )
            continue
        stage = Stage(child.base_name)
        for sub in sorted(listing.values(), key=lambda i: i.base_name):
            if sub.type != pafs.FileType.Directory or _skipped(sub.base_name):
                continue
            sub_listing = {i.base_name: i for i in _store.list_dir(fs, sub.path)}
            if set(sub_listing) & RUN_FILES or _TUNE_TRIAL_ID.search(sub.base_name):
                stage.sources.append(TrialSource(stage.name, sub.base_name, sub.path, sub_listing))
        if "stage_status.json" in listing:
            _apply_stage_status(fs, stage, listing["stage_status.json"].path, warnings)
        if stage.sources:
            stages[stage.name] = stage
    return stages


def _skipped(name: str) -> bool:
    return name in (_store.TABLES_DIR, "checkpoints") or name.startswith((".", "_"))


def fingerprint(sweep: str, src: TrialSource, settings: SweepSettings = SweepSettings()) -> str:
    parts = [S.FORMAT_VERSION, sweep, src.stage, src.dir_name, str(src.max_epochs), str(src.stage_status),
             str(settings.rank_window), str(settings.search), str(settings.git_commit), str(settings.git_dirty)]
    names = list(FINGERPRINT_FILES) + [name for name, _, _ in equity_files(src.files)]
    for name in names:
        info = src.files.get(name)
        if info is not None:
            parts.append(f"{name}:{info.size}:{info.mtime_ns}")
    parts.append(json.dumps(src.runner, sort_keys=True, default=str))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- one trial


def read_trial(
    fs: pafs.FileSystem, sweep: str, src: TrialSource, settings: SweepSettings = SweepSettings()
) -> TrialRead:
    notes: list[str] = []
    runner = src.runner or {}
    row: dict[str, Any] = {
        "sweep": sweep,
        "stage": src.stage,
        "trial_id": trial_id_of(src),
        "trial_dir": src.dir_name,
        "tune_status": _str_or_none(runner.get("tune_status")),
        "iterations": _int_or_none(runner.get("iterations"), "iterations", notes),
        "node_id": _str_or_none(runner.get("node_id")),
        "hung_last_events": _str_or_none(runner.get("hung_last_events")),
        "max_epochs": src.max_epochs,
        "stage_status": src.stage_status,
        "source_fingerprint": src.fingerprint,
    }
    outcome = runner.get("outcome")
    if outcome is not None and outcome not in S.RUNNER_OUTCOMES:
        notes.append(f"stage_status.json outcome {outcome!r} is not one of {S.RUNNER_OUTCOMES}")
        outcome = None
    row["outcome"] = outcome

    params_columns, params = _read_params(fs, src, notes)
    row.update(params_columns)
    row.update(configuration(params, runner, notes))
    row["search"] = settings.search
    metrics, problem = _read_metrics(fs, src, notes)
    metrics_error = _apply_metrics(row, metrics, notes)
    row["error_kind"] = _error_kind(row.get("error_kind"), runner, notes)
    if isinstance(metrics.get("provenance"), dict) and row["provenance_git_commit"] is None \
            and settings.git_commit is not None:
        # The trial could not ask git where it ran; the code is the driver's (sweep.json).
        row["provenance_git_commit"], row["provenance_git_dirty"] = settings.git_commit, settings.git_dirty

    events = None
    if "events.csv" in src.files:
        events = _read_events(fs, src.files["events.csv"].path, notes)
    row.update(_derive_from_events(events))
    row["rank_window"] = settings.rank_window
    row["val_loss_smoothed"] = ranking_value(events, settings.rank_window, runner, notes)
    row.update(evaluation_columns(fs, src.files, row, notes))

    status, reason = _resolve_status(problem, row.get("run_status"), outcome)
    if src.folder_missing:
        reason = f"trial folder {src.dir_name!r} listed in stage_status.json is missing"
        status = outcome if outcome in (ERROR, HUNG) else INCOMPLETE
    row["status"] = status
    # Tune writes error.txt when the trainable raised outside the run function (or the worker
    # died); it is the only error text such a trial has.
    tune_error = _read_text(fs, src.files["error.txt"].path) if "error.txt" in src.files else None
    runner_error = _str_or_none(runner.get("error"))
    texts: list[str] = []
    for text in (metrics_error, tune_error, runner_error):
        if text and not any(text in seen for seen in texts):
            texts.append(text)
    details = "\n".join(texts) or None
    if reason is not None:  # INCOMPLETE, or ERROR/HUNG from the runner without metrics.json
        row["error"] = reason if details is None else f"{reason}\n{details}"
    elif details is not None:
        row["error"] = details
    else:
        row["error"] = row["hung_last_events"] if status == HUNG else None

    if events is not None:
        n = events.num_rows
        events = events.append_column("seq", pa.array(np.arange(n, dtype=np.int64)))
        for name, value in (("sweep", sweep), ("stage", src.stage), ("trial_id", row["trial_id"])):
            events = events.append_column(name, pa.array([value] * n, S.STR))
    equity = equity_table(fs, sweep, src.stage, row["trial_id"], src.files, notes)
    row = _storable_row(row, notes)
    row["ingest_notes"] = "; ".join(notes) if notes else None
    return TrialRead(row, events, equity)


def _storable_row(row: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """``row`` with every value Arrow cannot store (an integer beyond int64, text that is not
    UTF-8) set to null, and every column name that is not UTF-8 dropped, each with a note."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if S.storable(name)[1]:
            notes.append(f"key {name!r:.60} is not valid UTF-8; left out")
            continue
        out[name], problem = S.storable(value)
        if problem:
            notes.append(f"{name}: {problem}; null")
    return out


def _int_or_none(value: Any, key: str, notes: list[str]) -> int | None:
    """A stage_status.json integer; anything else is null with a note."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    notes.append(f"stage_status.json {key}: expected an int, got {short_repr(value)}; null")
    return None


def _error_kind(from_metrics: Any, runner: dict[str, Any], notes: list[str]) -> str | None:
    """error_kind: the runner's (stage_status.json) when it has one, as its outcome wins, else
    metrics.json's; a value outside psann.contract.ERROR_KINDS is null with a note."""
    kinds = {}
    for source, value in (("metrics.json", from_metrics), ("stage_status.json", runner.get("error_kind"))):
        if value is None:
            continue
        if not isinstance(value, str) or (S.ERROR_KINDS and value not in S.ERROR_KINDS):
            allowed = ", ".join(S.ERROR_KINDS) or "text"
            notes.append(f"{source} error_kind: expected one of {allowed}, got {short_repr(value)}; null")
            continue
        kinds[source] = value
    if len(set(kinds.values())) > 1:
        notes.append(f"stage_status.json error_kind {kinds['stage_status.json']!r} differs from "
                     f"{kinds['metrics.json']!r} of metrics.json; the runner's kept")
    return kinds.get("stage_status.json", kinds.get("metrics.json"))


def _resolve_status(
    metrics_problem: str | None, run_status: str | None, outcome: str | None
) -> tuple[str, str | None]:
    """(status, reason).  The runner's outcome wins over metrics.json's status, except that an
    unreadable metrics.json is INCOMPLETE; a missing one under an ERROR/HUNG verdict keeps the
    verdict (a run that hung or failed before its first epoch never wrote metrics.json)."""
    if metrics_problem is not None:
        if metrics_problem == "metrics.json missing" and outcome in (ERROR, HUNG):
            return outcome, f"{metrics_problem}; stage_status.json outcome {outcome}"
        return INCOMPLETE, metrics_problem
    if outcome == INCOMPLETE:
        return outcome, f"the sweep runner recorded INCOMPLETE (metrics.json status {run_status!r})"
    if outcome is not None:
        return outcome, None
    status = S.RUN_STATUS_TO_STATUS.get(run_status or "")
    if status is None:
        return INCOMPLETE, (
            f"metrics.json status {run_status!r} is not one of "
            f"{sorted(S.RUN_STATUS_TO_STATUS)}"
        )
    return status, None


def trial_id_of(src: TrialSource) -> str:
    """The runner's trial_id, else Tune's id in the folder name, else the folder name."""
    runner = src.runner or {}
    return str(runner.get("trial_id") or _tune_trial_id(src.dir_name) or src.dir_name)


def _tune_trial_id(dir_name: str) -> str | None:
    match = _TUNE_TRIAL_ID.search(dir_name)
    return match.group(1) if match else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        return _store.read_bytes(fs, path).decode("utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _read_metrics(fs: pafs.FileSystem, src: TrialSource, notes: list[str]) -> tuple[dict, str | None]:
    info = src.files.get("metrics.json")
    if info is None:
        return {}, "metrics.json missing"
    obj, problem = _store.read_json_object(fs, info.path, "metrics.json", notes)
    return (obj or {}), problem


def _apply_metrics(row: dict[str, Any], metrics: dict, notes: list[str]) -> str | None:
    """Copy metrics.json into row (flattened with '_'); returns its error text."""
    for name, type_ in S.METRIC_COLUMNS:
        row[name] = None
    row[S.METRICS_KEY_COLUMNS["status"]] = _str_or_none(metrics.get("status"))
    error = metrics.get("error")
    for key, value in flatten_keys({k: v for k, v in metrics.items() if k not in S.METRICS_KEY_COLUMNS}).items():
        if key in S.KNOWN_TRIAL_TYPES and key in dict(S.METRIC_COLUMNS):
            row[key], note = S.coerce_known(value, S.KNOWN_TRIAL_TYPES[key])
            if note:
                notes.append(f"metrics.json {key}: {note}")
        elif value is not None:
            name = key if key not in S.KNOWN_TRIAL_TYPES and not key.startswith("params_") else f"metric_{key}"
            row[name], note = S.extra_value(value)
            if note:
                notes.append(f"metrics.json {key}: {note}; null")
    return None if error is None else str(error)


def _read_params(
    fs: pafs.FileSystem, src: TrialSource, notes: list[str]
) -> tuple[dict[str, Any], dict | None]:
    """(params_* columns, the sampled parameters of params.json or None).

    The repeat index (psann.contract.REPEAT_KEY) is not a parameter: it has its own column.
    """
    if "params.json" in src.files:
        obj, problem = _store.read_json_object(fs, src.files["params.json"].path, "params.json", notes)
        sampled = obj
    elif "config_resolved.yaml" in src.files:
        obj, problem = _read_yaml(fs, src.files["config_resolved.yaml"].path)
        sampled = None  # a plain run's whole config: not a sampled configuration
    else:
        return {}, None
    if problem:
        notes.append(problem)
        return {}, None
    body = {k: v for k, v in obj.items() if k != C.REPEAT_KEY}
    columns = {S.param_column(k): S.scalar_value(v) for k, v in flatten_keys(body, ".").items()}
    return columns, sampled


def _read_yaml(fs: pafs.FileSystem, path: str) -> tuple[dict | None, str | None]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        obj = yaml.load(_store.read_bytes(fs, path), Loader=loader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        return None, f"config_resolved.yaml unreadable ({exc})"
    if not isinstance(obj, dict):
        return None, f"config_resolved.yaml is not a mapping (got {type(obj).__name__})"
    return obj, None


# --------------------------------------------------------------------------- events

_EVENT_TYPES = dict(S.EVENT_CSV_COLUMNS)
_CONVERT = pacsv.ConvertOptions(
    column_types=_EVENT_TYPES,
    null_values=[""],
    strings_can_be_null=True,
    quoted_strings_can_be_null=True,
)


def _read_events(fs: pafs.FileSystem, path: str, notes: list[str]) -> pa.Table | None:
    table = _store.read_csv_table(fs, path, "events.csv", notes, _CONVERT, newlines_in_values=True)
    if table is None:
        return None
    for name, type_ in S.EVENT_CSV_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, type_))
    return table


def _derive_from_events(events: pa.Table | None) -> dict[str, Any]:
    out: dict[str, Any] = {name: None for name, _ in S.TRIAL_DERIVED_COLUMNS[:16]}
    if events is None:
        return out
    n = events.num_rows
    out["events_count"] = n
    kinds = events["event"].to_pylist()
    out["warnings_count"] = sum(k == "warning" for k in kinds)
    if n == 0:
        return out
    stamps = events["timestamp"]
    out["first_event_at"] = stamps[0].as_py()
    out["last_event_at"] = stamps[n - 1].as_py()
    out["last_event"] = kinds[-1]
    out["last_message"] = events["message"][n - 1].as_py()
    epoch_rows = [i for i, k in enumerate(kinds) if k == "epoch"]
    if not epoch_rows:
        return out
    phases = events["phase"].to_pylist()
    main = phases[epoch_rows[-1]]
    rows = [i for i in epoch_rows if phases[i] == main]
    out["main_phase"] = main
    out["epochs_logged"] = len(rows)
    epochs = events["epoch"].to_pylist()
    val = events["val_loss"].to_numpy(zero_copy_only=False)[rows].astype(float)
    finite = np.isfinite(val)
    if finite.any():
        best = int(np.flatnonzero(finite)[np.argmin(val[finite])])
        out["best_val_loss"] = float(val[best])
        out["best_val_loss_epoch"] = epochs[rows[best]]
    last = rows[-1]
    out["last_epoch"] = epochs[last]
    for column, name in (
        ("train_loss", "final_train_loss"),
        ("val_loss", "final_val_loss"),
        ("val_mse", "final_val_mse"),
        ("reward_mean", "final_reward_mean"),
        ("lr", "final_lr"),
    ):
        out[name] = events[column][last].as_py()
    return out
