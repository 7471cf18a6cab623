"""`--where` and `--sort` through DuckDB: a checked, read-only SQL predicate over one table.

    val_loss < 0.5 and status == 'SUCCESS'
    stage in ('smoke', 'hisso') and not (error is null)
    amp_enabled or params_hisso__window >= 32

A filter is a DuckDB SQL boolean expression over the columns of the table queried (docs/results.md).
Before it runs, DuckDB's own parser turns it into a syntax tree (``json_serialize_sql``) and we
check that tree: it must be exactly the condition of ``SELECT * FROM <table> WHERE (...)`` (no
second statement, no clause or set operation smuggled past the closing parenthesis), hold no
subquery, and name only columns of the table (an unknown one is reported with a did-you-mean).
The query then runs on an in-memory connection with external access disabled and the
configuration locked, so no expression can read or write a file. DuckDB is imported on first
use, never at import time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from psann.errors import ValidationError, did_you_mean

if TYPE_CHECKING:
    import duckdb

# The position of each row in the table queried; the result of a filter is a list of them, so the
# rows come back through pyarrow with their exact types.
_ROW = "__sweeps_row__"
_BOOLEAN_TYPES = ("BOOLEAN", "NULL")


class WhereError(ValidationError):
    """A --where filter or --sort key that does not parse or does not fit the table.

    ``key`` is ``"--where"`` or ``"--sort"``; ``reason`` says what is wrong.
    """


def import_duckdb() -> Any:
    """The duckdb module, or an ImportError that says which extra installs it."""
    try:
        import duckdb
    except ImportError:
        raise ImportError(
            "filters, sorting and SQL over the results tables need DuckDB, part of the 'sweeps' "
            "extra: pip install 'psann-sweeps[sweeps]'"
        ) from None
    return duckdb


def connect(allowed_paths: Sequence[str] = ()) -> "duckdb.DuckDBPyConnection":
    """An in-memory DuckDB connection that reads only `allowed_paths` and no other file.

    External access is off (no file, URL, ATTACH or extension install) and the configuration is
    locked, so a statement cannot switch it back on. Timestamps compare in UTC.
    """
    duckdb = import_duckdb()
    connection = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    try:
        try:
            # An ISO string compared with a timestamp column means UTC, whatever the machine's zone.
            connection.execute("SET TimeZone = 'UTC'")
        except duckdb.Error:
            pass  # a build without ICU has no time zones: timestamps are UTC already
        if allowed_paths:
            listed = ", ".join(quote_string(path) for path in allowed_paths)
            connection.execute(f"SET allowed_paths = [{listed}]")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
    except BaseException:
        connection.close()
        raise
    return connection


def quote_identifier(name: str) -> str:
    """``name`` as a DuckDB identifier, whatever characters it holds."""
    return '"' + name.replace('"', '""') + '"'


def quote_string(text: str) -> str:
    """``text`` as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def unknown_column(key: str, name: str, known: Sequence[str], text: str | None = None, *,
                   error: type[ValidationError] | None = None) -> ValidationError:
    """The error for a column that is not in the table: a did-you-mean and the known columns."""
    hint = did_you_mean(name, known)
    context = f" in {text!r}" if text is not None else ""
    reason = f"unknown column {name!r}{context}"
    if hint:
        reason += f" (did you mean {hint!r}?)"
    if text is not None and f'"{name}"' in text:
        # "..." is a column name in SQL; the old filter language also took it for a string.
        reason += f"; write a string value in single quotes: '{name}'"
    return (error or WhereError)(key, f"{reason}; available columns: {', '.join(known)}")


def check_where(connection: "duckdb.DuckDBPyConnection", text: str, table: str,
                columns: Sequence[str]) -> str:
    """Check that `text` is one condition over `columns` of `table`; return it for a WHERE clause.

    Raises WhereError (key ``--where``) for a syntax error, anything that is not a single
    condition, a subquery, or an unknown column. Types are checked when the condition runs.
    """
    if not isinstance(text, str):
        raise TypeError(f"a filter expression must be a str, got {type(text).__name__}")
    if not text.strip():
        raise WhereError("--where", "the filter is empty; write a condition such as \"val_loss < 0.5\"")
    prefix = f"SELECT * FROM {quote_identifier(table)} WHERE ("
    # The newline ends a trailing `-- comment` before the closing parenthesis.
    parsed = _serialize(connection, f"{prefix}{text}\n)")
    if parsed.get("error") and parsed.get("error_type") == "parser":
        raise _syntax_error(text, parsed, len(prefix.encode()))
    template = _serialize(connection, f"{prefix}true\n)")
    statements = parsed.get("statements") or []
    if statements and any(n.get("class") == "PARAMETER" for n in _nodes(statements[0]["node"].get("where_clause"))):
        raise WhereError("--where", f"{text!r} holds a parameter ($1, ?); write the value itself")
    # Anything else that parses but is not a SELECT (a second statement such as COPY) is an error
    # of the serializer; a statement that differs from the template outside its WHERE clause has
    # had its condition's parentheses closed early.
    if (parsed.get("error") or len(statements) != 1
            or _without_where(statements[0]) != _without_where(template["statements"][0])):
        raise WhereError(
            "--where",
            f"{text!r} is not a single condition over the {table} table (it closes the "
            f"condition's parentheses to add a clause or another statement); use --sql for "
            f"whole queries",
        )
    where = statements[0]["node"]["where_clause"]
    if any(node.get("class") == "SUBQUERY" for node in _nodes(where)):
        raise WhereError(
            "--where",
            f"{text!r} holds a subquery; a filter is a condition on each row of {table}. "
            f"Use --sql for queries that read other rows or tables",
        )
    known = {name.lower(): name for name in columns}  # DuckDB matches names case-insensitively
    for name in _column_refs(where):
        if name.lower() not in known:
            raise unknown_column("--where", name, list(columns), text)
    return text


def order_by(sort: Sequence[str], schema: pa.Schema, descending: bool) -> list[str]:
    """ORDER BY terms for sort columns: nulls last either way, NaN just before them (as pyarrow)."""
    direction = "DESC" if descending else "ASC"
    terms = []
    for name in sort:
        if not isinstance(name, str) or name not in schema.names:
            raise unknown_column("--sort", str(name), schema.names)
        column = quote_identifier(name)
        if pa.types.is_floating(schema.field(name).type):
            terms.append(f"isnan({column}) ASC NULLS LAST")
        terms.append(f"{column} {direction} NULLS LAST")
    return terms


def select_rows(data: pa.Table, table: str, *, where: str | None = None,
                sort: Sequence[str] = (), descending: bool = False,
                top: int | None = None) -> pa.Array:
    """Indices of the rows of `data` that `where` keeps, in `sort` order (ties: table order).

    Example::

        data.take(select_rows(data, "trials", where="status == 'SUCCESS'", sort=["val_loss"], top=5))
    """
    terms = order_by(sort, data.schema, descending) + [quote_identifier(_ROW)]
    duckdb = import_duckdb()
    connection = connect()
    try:
        name = quote_identifier(table)
        connection.register(table, data.append_column(_ROW, pa.array(np.arange(data.num_rows, dtype=np.int64))))
        condition = "true"
        if where is not None:
            condition = check_where(connection, where, table, data.column_names)
            _check_boolean(connection, condition, name)
        limit = f" LIMIT {int(top)}" if top is not None else ""
        statement = (f"SELECT {quote_identifier(_ROW)} FROM {name} WHERE ({condition}\n) "
                     f"ORDER BY {', '.join(terms)}{limit}")
        try:
            rows = connection.execute(statement).fetchnumpy()[_ROW]
        except duckdb.Error as exc:
            key, what = ("--where", where) if where is not None else ("--sort", ", ".join(sort))
            raise WhereError(key, f"cannot evaluate {what!r}: {first_line(exc)}") from None
        return pa.array(rows, pa.int64())
    finally:
        connection.close()


def _check_boolean(connection: "duckdb.DuckDBPyConnection", condition: str, name: str) -> None:
    duckdb = import_duckdb()
    try:
        relation = connection.sql(f"SELECT ({condition}\n) FROM {name}")
    except duckdb.Error as exc:  # a type mismatch, an unknown function, an aggregate...
        raise WhereError("--where", f"cannot evaluate {condition!r}: {first_line(exc)}") from None
    kind = str(relation.types[0])
    if kind not in _BOOLEAN_TYPES:
        raise WhereError(
            "--where",
            f"{condition!r} gives {kind} values, not true/false; compare it with something "
            f"(e.g. {condition} > 0)",
        )


def _serialize(connection: "duckdb.DuckDBPyConnection", statement: str) -> dict[str, Any]:
    """DuckDB's syntax tree of `statement` as JSON ({"error": true, ...} when it does not parse)."""
    duckdb = import_duckdb()
    try:
        rows = connection.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()
    except duckdb.Error as exc:  # statements the serializer cannot express
        return {"error": True, "error_type": "serializer", "error_message": first_line(exc)}
    return json.loads(rows[0][0])


def _without_where(statement: dict[str, Any]) -> dict[str, Any]:
    node = {key: value for key, value in statement.get("node", {}).items() if key != "where_clause"}
    return {**statement, "node": node}


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every expression node of a serialized syntax tree, depth first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _column_refs(tree: Any) -> Iterator[str]:
    if isinstance(tree, dict):
        if tree.get("class") == "LAMBDA":
            return  # `lambda x: ...` binds its own names; DuckDB's binder checks the body
        if tree.get("class") == "COLUMN_REF" and tree.get("column_names"):
            yield str(tree["column_names"][-1])
        for value in tree.values():
            yield from _column_refs(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _column_refs(value)


def _syntax_error(text: str, parsed: dict[str, Any], prefix_bytes: int) -> WhereError:
    message = str(parsed.get("error_message") or "does not parse").splitlines()[0]
    reason = f"syntax error in {text!r}: {message}"
    try:
        offset = int(parsed.get("position")) - prefix_bytes
    except (TypeError, ValueError):
        return WhereError("--where", reason)
    encoded = text.encode()
    if offset >= len(encoded.rstrip()):
        # DuckDB points at the parenthesis that closes our WHERE (...): the text stopped early.
        return WhereError("--where", f"syntax error in {text!r}: the condition ends too early")
    if offset >= 0:
        column = len(encoded[:offset].decode(errors="ignore"))
        reason += f"\n  {text}\n  {' ' * column}^"
    return WhereError("--where", reason)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (DuckDB adds the statement and a caret below it)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

