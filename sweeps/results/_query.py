"""Read the results tables back: load, filter/sort/top-k and SQL through DuckDB, summaries.

Every "best" here is the run contract's ranking rule (psann.contract.rank_trials): the lowest
val_loss_smoothed among SUCCESS and PRUNED trials, ties by (stage, trial_id), unranked trials last.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from psann.contract import RANK_METRIC, best_trial, rank_configurations, rank_trials
from psann.errors import ValidationError, did_you_mean

from . import _schema as S
from . import _store
from ._where import (connect, first_line, import_duckdb, quote_identifier, quote_string, select_rows,
                     unknown_column)

TABLES = _store.TABLE_NAMES  # trials, events, equity
_KNOWN = {"trials": S.KNOWN_TRIAL_TYPES, "events": S.KNOWN_EVENT_TYPES, "equity": S.KNOWN_EQUITY_TYPES}
_ORDER = {"trials": S.order_trial_columns, "events": S.order_event_columns, "equity": S.order_equity_columns}


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
    known, order = _KNOWN[table], _ORDER[table]
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


def load_equity(path: str | os.PathLike, stage: str | Sequence[str] | None = None, *,
                filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """The `equity` table of a sweep (one row per step of each equity CSV), optionally one stage's.

    Example::

        curves = load_equity("runs/sweeps/hisso_wave", stage="hisso")
        evaluated = curves.filter(pc.equal(curves["source"], "evaluation"))
    """
    return _load(path, "equity", stage, filesystem)


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
    by_config: bool = False,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """Filter, sort and cut a results table.

    `where` is a DuckDB SQL condition over the table's columns (docs/results.md, "Filters"),
    checked and run read-only; `sort` is one column or several (ties broken by the next, then
    by table order); nulls sort last either way, NaN just before them. `top` without `sort` on
    the trials table keeps the best trials by the ranking rule (val_loss_smoothed of SUCCESS and
    PRUNED trials, ties by stage and trial_id; unranked trials last). `by_config` turns the
    filtered trials into one row per configuration (summarize_configs) before sorting and
    cutting. Bad input raises a ValidationError (``WhereError`` for `where` and `sort`) whose
    ``key`` names the argument.

    Example::

        best = query("runs/sweeps/hisso_wave", where="status == 'SUCCESS'",
                     sort="val_loss", top=10, columns=["trial_id", "val_loss"])
        ranked = query("runs/sweeps/hisso_wave", top=5)  # the five best by the ranking rule
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValidationError.expected("--top", "an int >= 1", top)
    if by_config and table != "trials":
        raise ValidationError("--by-config", f"groups the trials table, not {table!r}")
    sort_keys = [sort] if isinstance(sort, str) else list(sort or [])
    if isinstance(columns, str):
        columns = [columns]
    data = _load(path, table, stage, filesystem)
    if by_config:
        if where is not None:
            data = data.take(select_rows(data, table, where=where))
            where = None
        data, table = summarize_configs(data), "configs"
    for index, name in enumerate(columns or []):
        if name in columns[:index]:
            raise ValidationError("--columns", f"column {name!r} is named twice; name each column once")
        if name not in data.column_names:
            raise unknown_column("--columns", name, data.column_names, error=ValidationError)
    ranked_top = top is not None and not sort_keys and table == "trials"
    if where is not None or sort_keys:
        data = data.take(select_rows(data, table, where=where, sort=sort_keys, descending=descending,
                                     top=None if ranked_top else top))
    if ranked_top:
        data = data.take(_ranking_order(data))
    if top is not None:
        data = data.slice(0, top)
    if columns:
        data = data.select(list(columns))
    return data


def _require_rank_columns(data: pa.Table, key: str) -> None:
    if RANK_METRIC not in data.column_names:
        raise ValidationError(
            key, f"the tables have no {RANK_METRIC} column (written by an older ingest); "
                 f"run `python -m sweeps.results ingest` on the sweep again")


def _ranking_order(trials: pa.Table) -> pa.Array:
    """Row indices of `trials` in the ranking rule's order: ranked best first, then the rest by
    (stage, trial_id)."""
    _require_rank_columns(trials, "--top")
    rows = trials.select(["stage", "trial_id", "status", RANK_METRIC]).to_pylist()
    for index, row in enumerate(rows):
        row["_index"] = index
    ranked = [row["_index"] for row in rank_trials(rows)]
    chosen = set(ranked)
    rest = sorted((r for r in rows if r["_index"] not in chosen),
                  key=lambda r: (r["stage"] or "", r["trial_id"] or "", r["_index"]))
    return pa.array(ranked + [r["_index"] for r in rest], pa.int64())


# Statement kinds that only read: SELECT (with FROM-first, DESCRIBE, SUMMARIZE, PIVOT, WITH) and
# EXPLAIN of one of them. The tables are read-only; anything else is refused before it runs.
_READING_STATEMENTS = ("SELECT", "EXPLAIN")
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(.*)", re.IGNORECASE | re.DOTALL)
# DuckDB types that Arrow carries only as opaque bytes (or without their offset): the result
# holds DuckDB's own text of them instead.
_TEXT_TYPES = ("BIGNUM", "VARINT", "BIT", "TIME WITH TIME ZONE")
_ONLY_THE_TABLES = ("the query may read only the sweep's tables (trials, events, equity): reading "
                    "or writing other files, URLs, databases and extensions is turned off")


def sql(path: str | os.PathLike, statement: str, *,
        filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Run one read-only DuckDB SQL query over the tables, exposed as `trials`, `events`, `equity`.

    Only a single SELECT (or EXPLAIN of one) is accepted, and it runs with external access
    disabled: it reads the tables' own Parquet files and nothing else, and writes nothing. A bad
    statement, or a result with two columns of one name, raises a ValidationError with key ``--sql``.

    Example::

        sql(sweep, "SELECT stage, count(*) AS n FROM trials GROUP BY stage ORDER BY stage")
    """
    duckdb = import_duckdb()
    if not isinstance(statement, str):
        raise TypeError(f"an SQL statement must be a str, got {type(statement).__name__}")
    _check_reading_statement(duckdb, statement)
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
            if result is None:
                return pa.table({})
            _check_distinct_names(result.columns)
            result = _with_text_of_duckdb_only_types(result)
            table = result.arrow()
            # DuckDB >= 1.4 returns a RecordBatchReader here (errors surface as it is read),
            # older versions a Table.
            return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
        except (duckdb.Error, pa.ArrowException) as exc:
            reason = f"SQL statement failed: {first_line(exc)}"
            if isinstance(exc, getattr(duckdb, "PermissionException", ())):
                reason += f"; {_ONLY_THE_TABLES}"
            raise ValidationError("--sql", reason) from None
    finally:
        connection.close()


def _check_reading_statement(duckdb: Any, statement: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN of one), before the tables are opened."""
    empty = ValidationError("--sql", "the statement is empty; write a query such as "
                                     "\"SELECT stage, count(*) FROM trials GROUP BY stage\"")
    if not statement.strip():
        raise empty
    try:
        parsed = duckdb.extract_statements(statement)
    except duckdb.Error as exc:
        raise ValidationError("--sql", f"SQL statement failed: {first_line(exc)}") from None
    if not parsed:  # only comments
        raise empty
    if len(parsed) != 1:
        raise ValidationError("--sql", f"expected one SQL statement, got {len(parsed)}")
    kind = _statement_kind(parsed[0])
    if kind == "MULTI":  # DuckDB runs a PIVOT without an IN list as two statements
        raise ValidationError(
            "--sql", "this statement runs several statements (a PIVOT without an IN list does); "
                     "list the values to pivot on: PIVOT trials ON status IN ('SUCCESS', 'ERROR') "
                     "USING count(*)")
    if kind not in _READING_STATEMENTS:
        raise ValidationError(
            "--sql", f"only a SELECT reads the tables (they are read-only), not {kind}; {_ONLY_THE_TABLES}")
    if kind == "EXPLAIN":
        match = _EXPLAIN.match(getattr(parsed[0], "query", "") or "")
        inner = [] if match is None else duckdb.extract_statements(match.group(1))
        if len(inner) != 1 or _statement_kind(inner[0]) != "SELECT":
            explained = _statement_kind(inner[0]) if len(inner) == 1 else "that statement"
            raise ValidationError(
                "--sql", f"EXPLAIN explains a SELECT here, not {explained}; {_ONLY_THE_TABLES}")


def _statement_kind(statement: object) -> str:
    kind = getattr(statement, "type", None)
    return str(getattr(kind, "name", kind)).upper()


def _check_distinct_names(columns: Sequence[str]) -> None:
    """A result with two columns of one name cannot be printed as JSON or used as a table."""
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise ValidationError(
                "--sql", f"the result has more than one column named {name!r}; give each its own "
                         f"name with AS (e.g. t.{name} AS {name}_1), or select USING (...) in a join")
        seen.add(name)


def _with_text_of_duckdb_only_types(relation: Any) -> Any:
    """``relation`` with its BIGNUM, BIT and TIMETZ columns cast to DuckDB's text of them."""
    kinds = [str(t).upper() for t in relation.types]
    if not any(kind in _TEXT_TYPES for kind in kinds):
        return relation
    terms = [f"CAST({quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" if kind in _TEXT_TYPES
             else quote_identifier(c) for c, kind in zip(relation.columns, kinds)]
    return relation.project(", ".join(terms))


def summary(path: str | os.PathLike, *, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """Per-stage counts of each status and the best trial by the contract's rule (``psann.contract.best_trial``).

    Columns: stage, trials, one count column per status (SUCCESS ... INTERRUPTED),
    best_trial_id, best_val_loss_smoothed, best_config_id.  The best trial is the one with the
    lowest val_loss_smoothed among SUCCESS and PRUNED trials; with repeats (a configuration with
    more than one ranked run) it is the best run of the configuration with the lowest mean, as
    the sweep runner's summary names it.  Stages are ordered by their first trial's start.
    """
    trials = load_trials(path, filesystem=filesystem)
    _require_rank_columns(trials, "summary")
    rows = []
    for stage in _stage_order(trials):
        part = trials.filter(pc.equal(trials["stage"], stage))
        statuses = part["status"].to_pylist()
        row = {"stage": stage, "trials": part.num_rows}
        row.update({status: statuses.count(status) for status in S.TRIAL_STATUSES})
        best = _best_of_stage(part.select(["stage", "trial_id", "status", "config_id", RANK_METRIC]).to_pylist())
        row["best_trial_id"] = best["trial_id"] if best else None
        row[f"best_{RANK_METRIC}"] = best[RANK_METRIC] if best else None
        row["best_config_id"] = best["config_id"] if best else None
        rows.append(row)
    schema = pa.schema(
        [("stage", S.STR), ("trials", S.I64)]
        + [(status, S.I64) for status in S.TRIAL_STATUSES]
        + [("best_trial_id", S.STR), (f"best_{RANK_METRIC}", S.F64), ("best_config_id", S.STR)]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _config_key(row: dict[str, Any]) -> str:
    """A trial's configuration; a trial without a config_id (a plain run) is one of its own."""
    config = row.get("config_id")
    return config if config is not None else "\0" + str(row.get("trial_id"))


def _best_of_stage(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best trial of one stage's rows: with repeats, the best run of the best configuration."""
    for row in rows:
        row["_config"] = _config_key(row)
    configs = rank_configurations(rows, config_key="_config")
    if configs and max(entry["runs"] for entry in configs) > 1:
        return best_trial(configs[0]["trials"])
    return best_trial(rows)


def _stage_order(trials: pa.Table) -> list[str]:
    """Stages in the order they ran (their first trial's first event), then by name."""
    first_at: dict[str, object] = {}
    for stage, at in zip(trials["stage"].to_pylist(), trials["first_event_at"].to_pylist()):
        if stage not in first_at or (at is not None and (first_at[stage] is None or at < first_at[stage])):
            first_at[stage] = at
    return sorted(first_at, key=lambda s: (first_at[s] is None, str(first_at[s] or ""), s))


# Columns of summarize_configs before the configuration's params_* columns.
CONFIG_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("stage", S.STR),
    ("config_id", S.STR),
    (f"{RANK_METRIC}_mean", S.F64),  # over the configuration's ranked runs
    (f"{RANK_METRIC}_std", S.F64),  # population std (0 for one run)
    ("runs", S.I64),  # ranked runs (SUCCESS or PRUNED with a finite value)
    ("trials", S.I64),  # every trial of the configuration in the stage
    ("best_trial_id", S.STR),  # its best run by the ranking rule
    ("trial_ids", S.STR),  # every trial, by repeat then trial_id, comma-separated
)


def summarize_configs(trials: pa.Table) -> pa.Table:
    """One row per (stage, configuration): the mean and std of val_loss_smoothed over its repeats.

    ``trials`` is a trials table (load_trials or query). Configurations are ranked as
    ``psann.contract.rank_configurations`` ranks them, by the mean of their ranked runs, best
    first across stages (ties by stage, then config_id); configurations without a ranked run
    follow with a null mean. A trial without a config_id (a plain run folder) is a configuration
    of its own. The configuration's params_* columns follow (values of its first trial).

    Example::

        configs = summarize_configs(load_trials("runs/sweeps/hisso_wave", stage="hisso"))
    """
    _require_rank_columns(trials, "--by-config")
    params = [n for n in trials.column_names if n.startswith("params_")]
    wanted = ["stage", "trial_id", "status", "config_id", "repeat", RANK_METRIC] + params
    rows = trials.select([n for n in wanted if n in trials.column_names]).to_pylist()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["stage"] or "", _config_key(row))
        row["_group"] = "\x1f".join(key)
        groups.setdefault(key, []).append(row)
    ranked: dict[str, dict[str, Any]] = {}
    for entry in rank_configurations(rows, config_key="_group"):
        ranked[entry["config_id"]] = entry
    out = []
    for key, members in groups.items():
        members.sort(key=lambda r: (r.get("repeat") is None, r.get("repeat") or 0, r["trial_id"] or ""))
        entry = ranked.get(members[0]["_group"])
        best = rank_trials(members)
        row = {
            "stage": key[0], "config_id": members[0].get("config_id"),
            f"{RANK_METRIC}_mean": entry["value"] if entry else None,
            f"{RANK_METRIC}_std": entry["std"] if entry else None,
            "runs": entry["runs"] if entry else 0, "trials": len(members),
            "best_trial_id": best[0]["trial_id"] if best else None,
            "trial_ids": ",".join(m["trial_id"] or "" for m in members),
        }
        row.update({name: members[0].get(name) for name in params})
        out.append(row)
    out.sort(key=lambda r: (r[f"{RANK_METRIC}_mean"] is None, r[f"{RANK_METRIC}_mean"] or 0.0,
                            r["stage"], r["config_id"] or "", r["trial_ids"]))
    schema = pa.schema(list(CONFIG_COLUMNS) + [trials.schema.field(n) for n in params])
    return pa.Table.from_pylist(out, schema=schema)
