"""Ingest: walk a sweep folder and write the `trials`, `events` and `equity` Parquet datasets.

Incremental: each trials row carries a fingerprint of the files it came from (size and mtime);
an ingest re-reads only trials whose fingerprint changed and rewrites only the stage partitions
that changed (or whose schema grew).  Idempotent: the tables are a function of the folder.
Reading one trial folder lives in _trial.py.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from psann.contract import INCOMPLETE

from . import _schema as S
from . import _store
from ._lock import DEFAULT_LOCK_TIMEOUT_S, ingest_lock
from ._trial import (Stage, SweepSettings, TrialRead, TrialSource, discover, fingerprint, read_sweep_settings,
                     read_trial, trial_id_of)

logger = logging.getLogger(__name__)

_READ_WORKERS = min(8, 2 * (os.cpu_count() or 1))
_TABLE_TYPES = {
    "trials": (S.KNOWN_TRIAL_TYPES, S.order_trial_columns),
    "events": (S.KNOWN_EVENT_TYPES, S.order_event_columns),
    "equity": (S.KNOWN_EQUITY_TYPES, S.order_equity_columns),
}
_SORT_KEYS = {
    "trials": ("trial_id", "trial_dir"),
    "events": ("trial_id", "seq"),
    "equity": ("trial_id", "source", "split", "step"),
}


@dataclass
class _Plan:
    """One stage partition to write: the rows kept from the tables and those read this time."""

    old_trials: pa.Table | None
    old_events: pa.Table | None
    old_equity: pa.Table | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[pa.Table] = field(default_factory=list)
    equity: list[pa.Table] = field(default_factory=list)


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did.

    trials_* count trial folders (removed: rows whose folder or stage is gone); events_added is
    the net change in event rows; stages_written the partitions rewritten; incomplete the
    INCOMPLETE trials among those read this time; warnings problems that affect a whole stage
    or the sweep (per-trial problems are in the trials table's ingest_notes column);
    equity_added the net change in equity rows.
    """

    sweep: str
    tables_path: str
    trials_added: int
    trials_updated: int
    trials_removed: int
    trials_unchanged: int
    events_added: int
    stages_written: tuple[str, ...]
    incomplete: int
    warnings: tuple[str, ...] = ()
    duration_seconds: float = 0.0
    equity_added: int = 0


def ingest_sweep(
    sweep_path: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> IngestReport:
    """Read every trial folder of a sweep and (re)write `<sweep>/tables/{trials,events,equity}`.

    `sweep_path` is a sweep folder (stage folders of Tune trials), or a folder of plain run
    folders (stage "runs"); a local path, a pyarrow filesystem URI, or a path on `filesystem`.
    On a local folder a second ingest of the same sweep waits for the first, up to
    `lock_timeout_s` seconds, then raises IngestLockedError (a TimeoutError). A malformed file or
    value never fails the ingest: it becomes null, or an INCOMPLETE trial, with a note.

    Example::

        report = ingest_sweep("runs/sweeps/hisso_wave")
        print(report.trials_added, report.tables_path)
    """
    started = time.perf_counter()
    fs, root = _store.resolve(sweep_path, filesystem)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"sweep folder {root!r} does not exist or is not a folder")
    if isinstance(fs, pafs.LocalFileSystem):
        with ingest_lock(_store.join(root, _store.TABLES_DIR), lock_timeout_s):
            return _ingest(fs, root, started)
    return _ingest(fs, root, started)


def _ingest(fs: pafs.FileSystem, root: str, started: float) -> IngestReport:
    sweep = _store.basename(root)
    warnings: list[str] = []
    stages = discover(fs, root, warnings)
    settings = read_sweep_settings(fs, root, warnings)
    if not stages:
        warnings.append(f"no trial folders found under {root!r} (expected <stage>/<trial>/ "
                        f"or <run>/ folders holding metrics.json, events.csv or params.json)")

    tables = _store.join(root, _store.TABLES_DIR)
    trials_dir, events_dir, equity_dir = (_store.join(tables, name) for name in _store.TABLE_NAMES)
    for table_dir in (trials_dir, events_dir, equity_dir):
        if _store.is_dir(fs, table_dir):
            _store.remove_stale_temporaries(fs, table_dir)

    old_stages = set().union(*(_store.existing_stages(fs, d) for d in (trials_dir, events_dir, equity_dir)))
    counts = dict(added=0, updated=0, removed=0, unchanged=0, events=0, equity=0)
    plans: dict[str, _Plan] = {}
    to_read: list[TrialSource] = []
    for stage in stages.values():
        for src in stage.sources:
            src.fingerprint = fingerprint(sweep, src, settings)
        old_trials = _read_existing(fs, trials_dir, stage.name, warnings)
        old_prints: dict[str, str] = {}
        old_ids: dict[str, str] = {}
        if old_trials is not None and {"trial_dir", "source_fingerprint"} <= set(
            old_trials.column_names
        ):
            for d, fp, tid in zip(
                old_trials["trial_dir"].to_pylist(),
                old_trials["source_fingerprint"].to_pylist(),
                old_trials["trial_id"].to_pylist(),
            ):
                old_prints[d], old_ids[d] = fp, tid
        else:
            old_trials = None
        current = {src.dir_name for src in stage.sources}
        changed = [s for s in stage.sources if old_prints.get(s.dir_name) != s.fingerprint]
        removed = set(old_prints) - current
        counts["added"] += sum(s.dir_name not in old_prints for s in changed)
        counts["updated"] += sum(s.dir_name in old_prints for s in changed)
        counts["removed"] += len(removed)
        counts["unchanged"] += len(stage.sources) - len(changed)
        if not changed and not removed and old_trials is not None:
            continue  # nothing to do; the (large) events partition is not even read
        # Without a readable trials partition every trial is re-read, so old events go too.
        old_events, old_equity = (
            (_read_existing(fs, d, stage.name, warnings) if old_trials is not None else None)
            for d in (events_dir, equity_dir)
        )
        stale_dirs = removed | {s.dir_name for s in changed}
        stale_ids = {old_ids[d] for d in stale_dirs if d in old_ids}
        if old_trials is not None:
            old_trials = _without(old_trials, "trial_dir", stale_dirs, S.KNOWN_TRIAL_TYPES)
        old_events = _without_trials(old_events, stale_ids, S.KNOWN_EVENT_TYPES, counts, "events")
        old_equity = _without_trials(old_equity, stale_ids, S.KNOWN_EQUITY_TYPES, counts, "equity")
        plans[stage.name] = _Plan(old_trials, old_events, old_equity)
        to_read.extend(changed)

    with ThreadPoolExecutor(max_workers=_READ_WORKERS) as pool:
        for src, read in zip(to_read, pool.map(lambda s: _read_trial_safely(fs, sweep, s, settings), to_read)):
            plan = plans[src.stage]
            plan.rows.append(read.row)
            if read.events is not None:
                plan.events.append(read.events)
                counts["events"] += read.events.num_rows
            if read.equity is not None:
                plan.equity.append(read.equity)
                counts["equity"] += read.equity.num_rows

    # Stages that vanished from disk lose their partitions.
    for gone in sorted(old_stages - set(stages)):
        plans.setdefault(gone, _Plan(None, None, None))
        counts["removed"] += _count_rows(fs, trials_dir, gone)
        counts["events"] -= _count_rows(fs, events_dir, gone)
        counts["equity"] -= _count_rows(fs, equity_dir, gone)

    new = {
        "trials": {name: _trials_table(plan.rows, plan.old_trials) for name, plan in plans.items()},
        "events": {name: _rows_table(plan.events, plan.old_events, S.KNOWN_EVENT_TYPES, "events.csv")
                   for name, plan in plans.items()},
        "equity": {name: _rows_table(plan.equity, plan.old_equity, S.KNOWN_EQUITY_TYPES, "equity CSV")
                   for name, plan in plans.items()},
    }
    dirs = {"trials": trials_dir, "events": events_dir, "equity": equity_dir}
    schemas = {
        table: _unified_schema(fs, dirs[table], stages, new[table], known, order)
        for table, (known, order) in _TABLE_TYPES.items()
    }
    # A stage left alone must still be rewritten when the shared schema grew (or, for tables
    # written before the equity table existed, when a table lacks the stage's partition).
    for name in sorted(set(stages) - set(plans)):
        stale = False
        for table in _store.TABLE_NAMES:
            stored = _store.partition_schema(fs, dirs[table], name)
            stale |= stored is not None and not stored.equals(_without_stage(schemas[table]))
        if stale:
            for table in _store.TABLE_NAMES:
                new[table].setdefault(name, _read_existing(fs, dirs[table], name, warnings))

    written = sorted(new["trials"])
    for name in written:
        parts = {
            table: _conform(new[table].get(name), schemas[table], sort=_SORT_KEYS[table])
            for table in _store.TABLE_NAMES
        }
        # Events and equity first: the fingerprints in trials are what make a later ingest skip
        # a trial, so they must never be newer than the rows beside them.
        for table in ("events", "equity", "trials"):
            _store.write_partition(fs, dirs[table], name, parts[table])

    incomplete = sum(
        row["status"] == INCOMPLETE for plan in plans.values() for row in plan.rows
    )
    report = IngestReport(
        sweep=sweep,
        tables_path=tables,
        trials_added=counts["added"],
        trials_updated=counts["updated"],
        trials_removed=counts["removed"],
        trials_unchanged=counts["unchanged"],
        events_added=counts["events"],
        stages_written=tuple(written),
        incomplete=incomplete,
        warnings=tuple(warnings),
        duration_seconds=time.perf_counter() - started,
        equity_added=counts["equity"],
    )
    logger.info(
        "ingested %s: %d added, %d updated, %d removed, %d unchanged, %+d events (%.1f s)",
        sweep, report.trials_added, report.trials_updated, report.trials_removed,
        report.trials_unchanged, report.events_added, report.duration_seconds,
    )
    return report


def _read_trial_safely(fs: pafs.FileSystem, sweep: str, src: TrialSource,
                       settings: SweepSettings) -> TrialRead:
    """read_trial, except that a problem it did not foresee makes the trial INCOMPLETE (with the
    error in its row) instead of failing the whole sweep's ingest."""
    try:
        return read_trial(fs, sweep, src, settings)
    except Exception as exc:  # noqa: BLE001 - one bad trial must never lose the sweep
        logger.warning("%s/%s: could not be read (%r); kept as INCOMPLETE", src.stage, src.dir_name, exc)
        reason = f"ingest could not read this trial ({type(exc).__name__}: {exc!s:.300})"
        row = {"sweep": sweep, "stage": src.stage, "trial_id": trial_id_of(src), "trial_dir": src.dir_name,
               "status": INCOMPLETE, "error": reason, "rank_window": settings.rank_window,
               "search": settings.search, "max_epochs": src.max_epochs, "stage_status": src.stage_status,
               "source_fingerprint": src.fingerprint, "ingest_notes": reason}
        return TrialRead(row, None, None)


# --------------------------------------------------------------------------- tables


def _read_existing(
    fs: pafs.FileSystem, table_dir: str, stage: str, warnings: list[str]
) -> pa.Table | None:
    try:
        return _store.read_partition(fs, table_dir, stage)
    except (OSError, pa.ArrowInvalid) as exc:
        message = f"existing {table_dir} stage={stage} unreadable ({exc}); rebuilt from the folders"
        logger.warning(message)
        warnings.append(message)
        return None


def _count_rows(fs: pafs.FileSystem, table_dir: str, stage: str) -> int:
    table = _read_existing(fs, table_dir, stage, [])
    return 0 if table is None else table.num_rows


def _trials_table(rows: list[dict[str, Any]], kept: pa.Table | None) -> pa.Table | None:
    if not rows:
        return kept
    named: list[tuple[str, pa.DataType, str]] = []
    names: dict[str, None] = {}
    for row in rows:
        where = f"stage {row['stage']!r} trial {row['trial_dir']!r}"
        for name, value in row.items():
            names.setdefault(name)
            type_ = S.KNOWN_TRIAL_TYPES.get(name) or S.infer_type(value)
            named.append((name, type_, where))
    for name, type_ in S.KNOWN_TRIAL_TYPES.items():
        named.append((name, type_, "the contract"))
        names.setdefault(name)
    if kept is not None:
        named.extend((f.name, f.type, f"the existing table (stage {rows[0]['stage']!r})") for f in kept.schema)
    types = S.unify_columns(named)
    table = pa.table(
        {name: pa.array([row.get(name) for row in rows], types[name]) for name in names}
    )
    if kept is not None and kept.num_rows:
        table = pa.concat_tables([_cast_to(kept, types), _cast_to(table, types)])
    return _drop_empty_extras(table, S.KNOWN_TRIAL_TYPES)


def _rows_table(
    parts: list[pa.Table], kept: pa.Table | None, known: dict[str, pa.DataType], source: str
) -> pa.Table | None:
    """The kept rows of a stage plus the rows read this time (events or equity)."""
    tables = ([kept] if kept is not None and kept.num_rows else []) + parts
    if not tables:
        return kept
    if len({t.schema for t in tables}) == 1:
        table = pa.concat_tables(tables)
    else:
        named = [(f.name, f.type, source) for t in tables for f in t.schema]
        named += [(n, t, "the contract") for n, t in known.items()]
        types = S.unify_columns(named)
        table = pa.concat_tables([_cast_to(t, types) for t in tables])
    return _drop_empty_extras(table, known)


def _without(table: pa.Table, column: str, values: set[str], known: dict) -> pa.Table:
    """``table`` less the rows whose ``column`` is in ``values`` (extra columns left empty dropped)."""
    keep = pc.invert(pc.is_in(table[column], pa.array(sorted(values), S.STR)))
    return _drop_empty_extras(table.filter(keep), known)


def _without_trials(table: pa.Table | None, trial_ids: set[str], known: dict, counts: dict[str, int],
                    name: str) -> pa.Table | None:
    """A per-row table (events, equity) less the rows of ``trial_ids``; None when it has no trial_id."""
    if table is None or "trial_id" not in table.column_names:
        return None
    before = table.num_rows
    table = _without(table, "trial_id", trial_ids, known)
    counts[name] -= before - table.num_rows
    return table


def _drop_empty_extras(table: pa.Table, known: dict[str, pa.DataType]) -> pa.Table:
    """Drop non-contract columns without a single value, so that a column exists exactly when
    some trial has a value for it (whatever order the trials were ingested in)."""
    empty = [
        f.name for f in table.schema
        if f.name not in known and table[f.name].null_count == table.num_rows
    ]
    return table.drop_columns(empty) if empty else table


def _cast_to(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    columns = {}
    for name, type_ in types.items():
        if name in table.column_names:
            column = table[name]
            columns[name] = column if column.type == type_ else column.cast(type_)
        else:
            columns[name] = pa.nulls(table.num_rows, type_)
    return pa.table(columns)


def _unified_schema(
    fs: pafs.FileSystem,
    table_dir: str,
    stages: dict[str, Stage],
    new_tables: dict[str, pa.Table | None],
    known: dict[str, pa.DataType],
    order,
) -> pa.Schema:
    named = [(n, t, "the contract") for n, t in known.items()]
    for name, table in sorted(new_tables.items()):
        if table is not None:
            named.extend((f.name, f.type, f"stage {name!r}") for f in table.schema)
    for name in sorted(set(stages) - set(new_tables)):
        schema = _store.partition_filled_schema(fs, table_dir, name, set(known))
        if schema is not None:
            named.extend((f.name, f.type, f"the existing table (stage {name!r})") for f in schema)
    types = S.unify_columns(named)
    return pa.schema([(n, types[n]) for n in order(types)])


def _without_stage(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name != "stage"])


def _conform(table: pa.Table | None, schema: pa.Schema, sort: tuple[str, ...]) -> pa.Table | None:
    """Cast to the shared schema (minus the partition column) in a deterministic row order."""
    if table is None or table.num_rows == 0:
        return None
    target = _without_stage(schema)
    table = _cast_to(table, {f.name: f.type for f in target})
    table = table.sort_by([(k, "ascending") for k in sort])
    return table.combine_chunks()
