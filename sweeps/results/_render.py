"""Printing a result table as text, CSV or JSON, whatever Arrow types a DuckDB query returned.

One text form per kind of value in every format (docs/results.md, "SQL"): NaN and
infinities are ``nan``/``inf`` in text and CSV and null in JSON (which has no such numbers);
decimals are exact in text and CSV and JSON numbers in JSON; intervals are ISO 8601 durations
(``P1Y2M3DT4.5S``); blobs are their bytes with ``\\xNN`` escapes for anything but printable ASCII,
as DuckDB writes them; lists, structs and maps are JSON (a map as an object whose keys are the
keys' text) inside a text or CSV cell, and JSON values in JSON; dates and times are ISO 8601
in JSON and as pyarrow writes them in text and CSV.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

_CELL_WIDTH = 40


def json_value(value: Any) -> Any:
    """A value of ``Table.to_pylist()`` as a JSON-ready value (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, pa.MonthDayNano):  # a namedtuple: before the tuple case
        return iso_duration(value.months, value.days, value.nanoseconds)
    if isinstance(value, dt.timedelta):
        return iso_duration(0, value.days, (value.seconds * 10**6 + value.microseconds) * 1000)
    if isinstance(value, (dt.datetime, dt.date, dt.time)) or hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return blob_text(bytes(value))
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        # A map: Table.to_pylist gives its entries as (key, value) pairs.
        return {_key_text(k): json_value(v) for k, v in value}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def text_value(value: Any) -> str | None:
    """The one-line text of a value for a text table or a CSV cell; None for null."""
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, (bool, int, str, decimal.Decimal)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, (dict, list, tuple)) and not isinstance(value, pa.MonthDayNano):
        return json.dumps(json_value(value), ensure_ascii=False, allow_nan=False)
    if isinstance(value, dt.datetime) or (hasattr(value, "isoformat") and not isinstance(value, (dt.date, dt.time))):
        return str(value)  # "2026-11-23 18:00:00+00:00", as Arrow and DuckDB print timestamps
    result = json_value(value)
    return result if isinstance(result, str) else str(result)


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else (text_value(key) or "null")


def iso_duration(months: int, days: int, nanoseconds: int) -> str:
    """An interval as an ISO 8601 duration; each part keeps its sign (``P-1D``)."""
    years, months = divmod(months, 12) if months >= 0 else (-(-months // 12), -(-months % 12))
    parts = "P" + "".join(f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (days, "D")) if n)
    sign = "-" if nanoseconds < 0 else ""
    hours, rest = divmod(abs(nanoseconds), 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    seconds, nanos = divmod(rest, 10**9)
    clock = "".join(f"{sign}{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or nanos:
        clock += f"{sign}{seconds}" + (f".{nanos:09d}".rstrip("0") if nanos else "") + "S"
    if clock:
        parts += "T" + clock
    return parts if parts != "P" else "PT0S"


def blob_text(data: bytes) -> str:
    r"""Bytes as DuckDB prints a BLOB: printable ASCII as is, every other byte as ``\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02X}" for b in data)


def _csv_native(type_: pa.DataType) -> bool:
    """Whether pyarrow's CSV writer prints this type itself (and the same way as text_value)."""
    if pa.types.is_dictionary(type_):
        return _csv_native(type_.value_type)
    return (pa.types.is_null(type_) or pa.types.is_boolean(type_) or pa.types.is_integer(type_)
            or pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_date(type_)
            or pa.types.is_timestamp(type_) or pa.types.is_time(type_) or pa.types.is_floating(type_)
            or pa.types.is_decimal(type_))


def csv_text(table: pa.Table) -> str:
    """The table as CSV (pyarrow's writer); columns it cannot print become their text form."""
    columns = {}
    for field, column in zip(table.schema, table.columns):
        if _csv_native(field.type):
            columns[field.name] = column
        else:
            columns[field.name] = pa.array([text_value(v) for v in column.to_pylist()], pa.string())
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns) if columns else table, sink)
    return sink.getvalue().to_pybytes().decode()


def json_text(table: pa.Table) -> str:
    """The table as a JSON array of row objects (always valid JSON: NaN and inf are null)."""
    rows = [{k: json_value(v) for k, v in row.items()} for row in table.to_pylist()]
    return json.dumps(rows, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = (text_value(value) or "").replace("\n", " ⏎ ")
    return text if len(text) <= _CELL_WIDTH else text[: _CELL_WIDTH - 1] + "…"


def format_table(table: pa.Table) -> str:
    """A plain aligned text table (numbers right-aligned), with a row count footer."""
    names = table.column_names
    if not names:
        return "(no columns)"
    cells = [[_cell(v) for v in table[name].to_pylist()] for name in names]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
               for f in table.schema]
    widths = [max([len(n)] + [len(c) for c in col]) for n, col in zip(names, cells)]
    lines = ["  ".join(n.rjust(w) if num else n.ljust(w) for n, w, num in zip(names, widths, numeric)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for i in range(table.num_rows):
        lines.append("  ".join(
            col[i].rjust(w) if num else col[i].ljust(w) for col, w, num in zip(cells, widths, numeric)
        ).rstrip())
    lines.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(lines)
