"""Read the results tables back: load, filter/sort/top-k, SQL through DuckDB, summary."""

from __future__ import annotations

import os
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from . import _schema as S
from . import _store
from ._where import WhereError, compile_where, unknown_column_message

TABLES = ("trials", "events")


def _dataset(path: str | os.PathLike, table: str,
             filesystem: pafs.FileSystem | None = None) -> ds.Dataset | None:
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
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
        raise ValueError(f"stage {unknown[0]!r} is not in the tables; stages: {', '.join(known) or '(none)'}")
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


def _check_columns(names: Sequence[str], schema: pa.Schema, what: str) -> None:
    for name in names:
        if name not in schema.names:
            raise ValueError(unknown_column_message(name, schema.names, what))


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

    `where` uses the small filter language of ``sweeps.results.parse_where``; `sort` is one
    column or several (ties broken by the next); nulls sort last either way.

    Example::

        best = query("runs/sweeps/hisso_wave", where="status == 'SUCCESS'",
                     sort="val_loss", top=10, columns=["trial_id", "val_loss"])
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    dataset = _dataset(path, table, filesystem)
    schema = dataset.schema if dataset is not None else _empty(table).schema
    sort_keys = [sort] if isinstance(sort, str) else list(sort or [])
    if isinstance(columns, str):
        columns = [columns]
    _check_columns(sort_keys, schema, "in sort")
    _check_columns(columns or [], schema, "in columns")
    expression = compile_where(where, schema) if where else None
    data = _load(path, table, stage, filesystem)
    if expression is not None:
        try:
            data = data.filter(expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise WhereError(f"bad filter expression {where!r}: {exc}") from None
    if sort_keys:
        order = "descending" if descending else "ascending"
        indices = pc.sort_indices(data, sort_keys=_sort_keys(sort_keys, order))
        if top is not None:
            indices = indices[:top]
        data = data.take(indices)
    elif top is not None:
        data = data.slice(0, top)
    if columns:
        data = data.select(list(columns))
    return data


def _sort_keys(names: Sequence[str], order: str) -> list[tuple]:
    # pyarrow >= 25 takes null placement per key; older versions only as a global option.
    if tuple(int(p) for p in pa.__version__.split(".")[:1]) >= (25,):
        return [(name, order, "at_end") for name in names]
    return [(name, order) for name in names]  # at_end is the older default too


def sql(path: str | os.PathLike, statement: str, *,
        filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Run a DuckDB SQL statement over the tables, exposed as `trials` and `events`.

    Needs the optional `sql` extra (``pip install 'psann-sweeps[sql]'``).

    Example::

        sql(sweep, "SELECT stage, count(*) AS n FROM trials GROUP BY stage ORDER BY stage")
    """
    try:
        import duckdb
    except ImportError:
        raise ImportError(
            "SQL queries need DuckDB, which is the optional 'sql' extra: "
            "pip install 'psann-sweeps[sql]' (or use query(... where=..., sort=...))"
        ) from None
    connection = duckdb.connect()
    try:
        fs, _ = _store.resolve(path, filesystem)
        for name in TABLES:
            dataset = _dataset(path, name, filesystem)
            if dataset is None:
                connection.register(name, _empty(name))
            elif isinstance(fs, pafs.LocalFileSystem):
                # DuckDB's own Parquet reader (parallel, with pushdown) over the exact files
                # pyarrow found, so hidden temporary partitions are never included.
                files = ", ".join("'" + f.replace("'", "''") + "'" for f in dataset.files)
                connection.execute(
                    f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{files}], "
                    f"hive_partitioning = true, union_by_name = true, "
                    f"hive_types = {{'stage': VARCHAR}})"
                )
            else:
                connection.register(name, dataset)
        try:
            result = connection.sql(statement)
        except duckdb.Error as exc:
            raise ValueError(f"SQL statement failed: {exc}") from None
        if result is None:
            return pa.table({})
        table = result.arrow()
        # DuckDB >= 1.4 returns a RecordBatchReader here, older versions a Table.
        return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
    finally:
        connection.close()


def summary(path: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Per-stage counts of each status and the best SUCCESS trial by val_loss.

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
        ok = part.filter(pc.and_(pc.equal(part["status"], "SUCCESS"), pc.is_valid(part["val_loss"])))
        ok = ok.filter(pc.invert(pc.is_nan(ok["val_loss"])))
        if ok.num_rows:
            best = ok.take(pc.sort_indices(ok, [("val_loss", "ascending"), ("trial_id", "ascending")])[:1])
            row["best_trial_id"], row["best_val_loss"] = best["trial_id"][0].as_py(), best["val_loss"][0].as_py()
        else:
            row["best_trial_id"], row["best_val_loss"] = None, None
        rows.append(row)
    schema = pa.schema(
        [("stage", S.STR), ("trials", S.I64)]
        + [(status, S.I64) for status in S.TRIAL_STATUSES]
        + [("best_trial_id", S.STR), ("best_val_loss", S.F64)]
    )
    return pa.Table.from_pylist(rows, schema=schema)
