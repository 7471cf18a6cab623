"""Read the results tables back: load, filter/sort/top-k and SQL through DuckDB, summary."""

from __future__ import annotations

import os
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from psann.contract import BEST_TRIAL_METRIC, best_trial
from psann.errors import ValidationError, did_you_mean

from . import _schema as S
from . import _store
from ._where import (connect, first_line, import_duckdb, quote_identifier, quote_string, select_rows,
                     unknown_column)

TABLES = ("trials", "events")


def _dataset(path: str | os.PathLike, table: str,
             filesystem: pafs.FileSystem | None = None) -> ds.Dataset | None:
    if table not in TABLES:
        raise ValidationError.expected("--table", f"one of {', '.join(TABLES)}", table)
    fs, inner = _store.resolve(path, filesystem)
    root = _store.tables_root(fs, inner)
    if root is None:
        raise FileNotFoundError(
            f"no results tables under {inner!r} (looked for {inner}/tables/trials); "
            f"run `python -m sweeps.results ingest {os.fspath(path)}` first"
        )
    return _store.open_dataset(fs, _store.join(root, table))


def _load(path: str | os.PathLike, table: str, stage: str | Sequence[str] | None,
          filesystem: pafs.FileSystem | None = None) -> pa.Table:
    dataset = _dataset(path, table, filesystem)
    if dataset is None:
        return _empty(table)
    if stage is None:
        return _stage_second(dataset.to_table())
    wanted = [stage] if isinstance(stage, str) else list(stage)
    fs, inner = _store.resolve(path, filesystem)
    known = _store.existing_stages(fs, _store.join(_store.tables_root(fs, inner), "trials"))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        maybe = f" (did you mean {hint!r}?)" if hint else ""
        raise ValidationError(
            "--stage", f"stage {unknown[0]!r} is not in the tables{maybe}; stages: {', '.join(known) or '(none)'}")
    return _stage_second(dataset.to_table(filter=pc.field("stage").isin(wanted)))


def _stage_second(table: pa.Table) -> pa.Table:
    """Put the partition column back where ingest had it, right after `sweep`."""
    names = [n for n in table.column_names if n != "stage"]
    return table.select(names[:1] + ["stage"] + names[1:])


def _empty(table: str) -> pa.Table:
    known = S.KNOWN_TRIAL_TYPES if table == "trials" else S.KNOWN_EVENT_TYPES
    order = S.order_trial_columns if table == "trials" else S.order_event_columns
    return pa.schema([(n, known[n]) for n in order(known)]).empty_table()


def load_trials(path: str | os.PathLike, stage: str | Sequence[str] | None = None, *,
                filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The `trials` table of a sweep (one row per trial), optionally one stage's rows.

    `path` is the sweep folder (or its tables/ folder).
    """
    return _load(path, "trials", stage, filesystem)


def load_events(path: str | os.PathLike, stage: str | Sequence[str] | None = None, *,
                filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The `events` table of a sweep (one row per events.csv row), optionally one stage's rows."""
    return _load(path, "events", stage, filesystem)


def query(
    path: str | os.PathLike,
    *,
    stage: str | Sequence[str] | None = None,
    where: str | None = None,
    sort: str | Sequence[str] | None = None,
    descending: bool = False,
    top: int | None = None,
    columns: Sequence[str] | None = None,
    table: str = "trials",
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """Filter, sort and cut a results table.

    `where` is a DuckDB SQL condition over the table's columns (docs/results.md, "Filters"),
    checked and run read-only; `sort` is one column or several (ties broken by the next, then
    by table order); nulls sort last either way, NaN just before them. Bad input raises a
    ValidationError (``WhereError`` for `where` and `sort`) whose ``key`` names the argument.

    Example::

        best = query("runs/sweeps/hisso_wave", where="status == 'SUCCESS'",
                     sort="val_loss", top=10, columns=["trial_id", "val_loss"])
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValidationError.expected("--top", "an int >= 1", top)
    sort_keys = [sort] if isinstance(sort, str) else list(sort or [])
    if isinstance(columns, str):
        columns = [columns]
    data = _load(path, table, stage, filesystem)
    for name in columns or []:
        if name not in data.column_names:
            raise unknown_column("--columns", name, data.column_names, error=ValidationError)
    if where is not None or sort_keys:
        data = data.take(select_rows(data, table, where=where, sort=sort_keys,
                                     descending=descending, top=top))
    elif top is not None:
        data = data.slice(0, top)
    if columns:
        data = data.select(list(columns))
    return data


# Statement kinds that only read: SELECT (with FROM-first, DESCRIBE, SUMMARIZE, PIVOT, WITH) and
# EXPLAIN. The tables are read-only; anything else is refused before it runs.
_READING_STATEMENTS = ("SELECT", "EXPLAIN")


def sql(path: str | os.PathLike, statement: str, *,
        filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Run one read-only DuckDB SQL query over the tables, exposed as `trials` and `events`.

    Only a single SELECT (or EXPLAIN) is accepted, and it runs with external access disabled:
    it reads the tables' own Parquet files and nothing else, and writes nothing. A bad
    statement raises a ValidationError with key ``--sql``.

    Example::

        sql(sweep, "SELECT stage, count(*) AS n FROM trials GROUP BY stage ORDER BY stage")
    """
    duckdb = import_duckdb()
    if not isinstance(statement, str):
        raise TypeError(f"an SQL statement must be a str, got {type(statement).__name__}")
    try:
        kinds = [_statement_kind(s) for s in duckdb.extract_statements(statement)]
    except duckdb.Error as exc:
        raise ValidationError("--sql", f"SQL statement failed: {first_line(exc)}") from None
    if len(kinds) != 1:
        raise ValidationError("--sql", f"expected one SQL statement, got {len(kinds)}")
    if kinds[0] not in _READING_STATEMENTS:
        raise ValidationError(
            "--sql", f"only a SELECT reads the tables (they are read-only), not {kinds[0]}")
    fs, _ = _store.resolve(path, filesystem)
    datasets = {name: _dataset(path, name, filesystem) for name in TABLES}
    local = isinstance(fs, pafs.LocalFileSystem)
    files = [f for d in datasets.values() if d is not None and local for f in d.files]
    connection = connect(allowed_paths=files)
    try:
        for name, dataset in datasets.items():
            if dataset is None:
                connection.register(name, _empty(name))
            elif local:
                # DuckDB's own Parquet reader (parallel, with pushdown) over the exact files
                # pyarrow found, so hidden temporary partitions are never included.
                listed = ", ".join(quote_string(f) for f in dataset.files)
                connection.execute(
                    f"CREATE VIEW {quote_identifier(name)} AS SELECT * FROM read_parquet([{listed}], "
                    f"hive_partitioning = true, union_by_name = true, "
                    f"hive_types = {{'stage': VARCHAR}})"
                )
            else:
                connection.register(name, dataset)
        try:
            result = connection.sql(statement)
            table = result.arrow() if result is not None else pa.table({})
            # DuckDB >= 1.4 returns a RecordBatchReader here (errors surface as it is read),
            # older versions a Table.
            return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
        except (duckdb.Error, pa.ArrowException) as exc:
            raise ValidationError("--sql", f"SQL statement failed: {first_line(exc)}") from None
    finally:
        connection.close()


def _statement_kind(statement: object) -> str:
    kind = getattr(statement, "type", None)
    return str(getattr(kind, "name", kind)).upper()


def summary(path: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Per-stage counts of each status and the best trial by the contract's rule (``psann.contract.best_trial``).

    Columns: stage, trials, one count column per status (SUCCESS ... INTERRUPTED),
    best_trial_id, best_val_loss.  Stages are ordered by their first trial's start.
    """
    trials = load_trials(path, filesystem=filesystem)
    rows = []
    first_at: dict[str, object] = {}
    for stage, at in zip(trials["stage"].to_pylist(), trials["first_event_at"].to_pylist()):
        if stage not in first_at or (at is not None and (first_at[stage] is None or at < first_at[stage])):
            first_at[stage] = at
    order = sorted(first_at, key=lambda s: (first_at[s] is None, str(first_at[s] or ""), s))
    for stage in order:
        part = trials.filter(pc.equal(trials["stage"], stage))
        statuses = part["status"].to_pylist()
        row = {"stage": stage, "trials": part.num_rows}
        row.update({status: statuses.count(status) for status in S.TRIAL_STATUSES})
        best = best_trial(part.select(["stage", "trial_id", "status", BEST_TRIAL_METRIC]).to_pylist())
        row["best_trial_id"] = best["trial_id"] if best else None
        row["best_val_loss"] = best[BEST_TRIAL_METRIC] if best else None
        rows.append(row)
    schema = pa.schema(
        [("stage", S.STR), ("trials", S.I64)]
        + [(status, S.I64) for status in S.TRIAL_STATUSES]
        + [("best_trial_id", S.STR), ("best_val_loss", S.F64)]
    )
    return pa.Table.from_pylist(rows, schema=schema)
