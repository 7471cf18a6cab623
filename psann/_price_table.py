"""Read and check a price table file (CSV or Parquet) for :func:`psann.data.price_table_dataset`.

A price table has a time column, one price column per asset and optional feature columns, one row
per time step. This module reads it with pyarrow (imported here, not by ``psann.data``, so the
library's import cost does not grow), sorts it by time and refuses, with the row named, what
cannot be a price series:

- a time that is missing or cannot be read as a date, datetime or number;
- a duplicate time (the same time value on two rows);
- a gap: a step between consecutive times larger than ``max_gap`` times the median step (with the
  default 5, a business-day calendar's weekends (3 days) and holiday weekends (4 to 5 days) pass,
  a missing week does not);
- a price that is missing, not a number, or <= 0; a feature value that is missing or not finite.

:func:`date_splits` cuts the usable rows into train / val / test at two split times.

Rows are named as the file numbers them: ``row 5`` is the fifth data row (the header is not a
row), and for a CSV also ``line 6`` (the header is line 1). Every error is a
:class:`psann.errors.ValidationError`: problems with the file's contents are keyed ``path`` (the
loader argument naming the file; a run config places it at ``data.kwargs.path``), problems with a
column name by the argument that names it (``time_column``, ``assets``, ``features``).
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from psann.errors import ValidationError, ValidationTypeError, did_you_mean, short_repr

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class PriceTable:
    """A checked price table, sorted by time: every time distinct, every price > 0."""

    times: np.ndarray  # (T,) datetime64 or float64, strictly increasing
    rows: np.ndarray  # (T,) int64: the 1-based data row of each time in the file
    prices: np.ndarray  # (T, M) float64, > 0
    features: np.ndarray  # (T, K) float64, finite (K may be 0)
    time_column: str
    assets: tuple[str, ...]
    feature_columns: tuple[str, ...]
    source: str  # the file, as given
    is_csv: bool

    def where(self, index: int) -> str:
        """``2024-01-09 (row 6, line 7)``: the time and file position of sorted row ``index``."""
        return f"{format_time(self.times[index])} ({row_label(int(self.rows[index]), self.is_csv)})"


def row_label(row: int, is_csv: bool) -> str:
    """``row 6, line 7`` for a CSV (header on line 1), ``row 6`` for Parquet."""
    return f"row {row}, line {row + 1}" if is_csv else f"row {row}"


def format_time(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _format_step(step: float, unit: str | None) -> str:
    text = f"{step:g}"
    if unit == "days" and step == 1:
        unit = "day"
    return f"{text} {unit}" if unit else text


def read_price_table(
    path: str | os.PathLike,
    *,
    time_column: str | None = None,
    assets: Sequence[str] | None = None,
    features: Sequence[str] = (),
    max_gap: float | None = 5.0,
    time_format: str | None = None,
) -> PriceTable:
    """Read a CSV or Parquet price table, sort it by time and check it (see the module docstring)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValidationTypeError.expected("path", "a path to a .csv or .parquet file", path)
    file = Path(path)
    source = str(path)
    name = file.name.lower()
    is_csv = name.endswith(CSV_SUFFIXES)
    if not is_csv and not name.endswith(PARQUET_SUFFIXES):
        allowed = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
        raise ValidationError("path", f"expected a file ending in one of {allowed}, got {source!r}")
    if not file.is_file():
        raise ValidationError("path", f"file not found: {source!r}")
    max_gap = _check_max_gap(max_gap)
    if time_format is not None and (not isinstance(time_format, str) or not time_format):
        raise ValidationError.expected("time_format", "a strptime format such as '%d/%m/%Y', or null", time_format)

    table = _read(file, source, is_csv)
    columns = list(table.column_names)
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValidationError("path", f"column {repeated[0]!r} appears more than once in {source}; names must be unique")
    if table.num_rows == 0 or not columns:
        raise ValidationError("path", f"expected a header and data rows, got an empty table in {source}")

    import pyarrow.compute as pc

    # Blank CSV lines are read as all-null rows (so line numbers stay true) and then skipped.
    blank = np.full(table.num_rows, is_csv)
    for column in table.columns if is_csv else ():
        blank &= np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
    file_rows = np.arange(1, table.num_rows + 1, dtype=np.int64)[~blank]
    if blank.any():
        table = table.filter(~blank)
    if table.num_rows == 0:
        raise ValidationError("path", f"expected data rows, got only blank ones in {source}")

    time_name = _time_column(time_column, columns)
    feature_names = _column_list("features", features, columns, exclude={time_name: "the time column"})
    if assets is None:
        asset_names = tuple(c for c in columns if c != time_name and c not in feature_names)
        if not asset_names:
            raise ValidationError("assets", f"the file has no price columns besides {time_name!r} and the features; columns: {', '.join(columns)}")
    else:
        asset_names = _column_list(
            "assets", assets, columns, exclude={time_name: "the time column", **{f: "a feature column" for f in feature_names}}
        )
        if not asset_names:
            raise ValidationError.expected("assets", "a non-empty list of price column names, or null for all", assets)

    times, unit = _times(table.column(time_name), time_name, file_rows, is_csv, time_format, source)
    prices = np.column_stack([_numbers(table.column(a), a, "assets", file_rows, is_csv, source) for a in asset_names])
    feature_values = np.column_stack(
        [_numbers(table.column(f), f, "features", file_rows, is_csv, source) for f in feature_names]
    ) if feature_names else np.empty((len(times), 0))

    order = np.argsort(times, kind="stable")
    times, file_rows = times[order], file_rows[order]
    prices, feature_values = prices[order], feature_values[order]
    checked = PriceTable(times, file_rows, prices, feature_values, time_name, asset_names, feature_names, source, is_csv)
    _check_duplicates(checked)
    _check_gaps(checked, max_gap, unit)
    _check_values(checked, assets_listed=assets is not None)
    return checked


def _check_max_gap(max_gap: Any) -> float | None:
    if max_gap is None:
        return None
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, float, np.number)) or not math.isfinite(max_gap) or max_gap < 1:
        raise ValidationError.expected("max_gap", "a number >= 1 (times the median step), or null to allow any gap", max_gap)
    return float(max_gap)


def _read(file: Path, source: str, is_csv: bool):
    import pyarrow as pa

    try:
        if is_csv:
            import pyarrow.csv as pacsv

            return pacsv.read_csv(
                file,
                parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
            )
        import pyarrow.parquet as pq

        return pq.read_table(file)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        kind = "CSV" if is_csv else "Parquet"
        raise ValidationError("path", f"cannot read {source!r} as {kind}: {str(exc).strip().splitlines()[0]}") from exc


def _time_column(time_column: Any, columns: list[str]) -> str:
    if time_column is None:
        return columns[0]
    if not isinstance(time_column, str):
        raise ValidationTypeError.expected("time_column", "a column name", time_column)
    if time_column not in columns:
        raise _no_column("time_column", time_column, columns)
    return time_column


def _no_column(key: str, name: str, columns: list[str]) -> ValidationError:
    hint = did_you_mean(name, columns)
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    return ValidationError(key, f"no column {name!r} in the file{suggestion}; columns: {', '.join(columns)}")


def _column_list(key: str, names: Any, columns: list[str], exclude: dict[str, str]) -> tuple[str, ...]:
    if isinstance(names, str):
        names = [names]
    if names is None:
        names = []
    if not isinstance(names, (list, tuple)):
        raise ValidationTypeError.expected(key, "a list of column names", names)
    seen: list[str] = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ValidationTypeError.expected(f"{key}[{i}]", "a column name", name)
        if name not in columns:
            raise _no_column(f"{key}[{i}]", name, columns)
        if name in exclude:
            raise ValidationError(f"{key}[{i}]", f"{name!r} is {exclude[name]}; a column has one role")
        if name in seen:
            raise ValidationError(f"{key}[{i}]", f"{name!r} is listed twice")
        seen.append(name)
    return tuple(seen)


def _times(column, name: str, rows: np.ndarray, is_csv: bool, time_format: str | None, source: str) -> tuple[np.ndarray, str | None]:
    """The time column as datetime64 (with its unit name for messages) or float64 numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    kind = column.type
    missing = np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)
    if missing.any():
        row = int(rows[np.argmax(missing)])
        raise ValidationError("path", f"missing time in column {name!r} at {row_label(row, is_csv)} of {source}")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = _parse_times(column, name, rows, is_csv, time_format, source)
        kind = column.type
    elif time_format is not None:
        raise ValidationError("time_format", f"only for a text time column; column {name!r} is already {kind}")
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            column = pc.cast(column, pa.timestamp(kind.unit))  # UTC wall time, the instants stay ordered
        times = column.to_numpy(zero_copy_only=False)
        unit = np.datetime_data(times.dtype)[0]
        return times, {"D": "days", "ms": "ms", "us": "us", "ns": "ns", "s": "s"}.get(unit, unit)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        times = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~np.isfinite(times)
        if bad.any():
            row = int(rows[np.argmax(bad)])
            raise ValidationError("path", f"expected finite times in column {name!r}, got {times[bad][0]} at {row_label(row, is_csv)} of {source}")
        return times, None
    raise ValidationError(
        "time_column", f"expected dates, datetimes or numbers in column {name!r}, got values of type {kind} (in {source})"
    )


def _parse_times(column, name: str, rows: np.ndarray, is_csv: bool, time_format: str | None, source: str):
    """Text times: with ``time_format`` through strptime, else as ISO 8601 dates or datetimes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if time_format is not None:
        parsed = pc.strptime(column, format=time_format, unit="s", error_is_null=True)
        bad = np.asarray(pc.is_null(parsed).to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValidationError(
                "path",
                f"cannot read {short_repr(column[i].as_py())} in column {name!r} at {row_label(int(rows[i]), is_csv)} "
                f"as a time with time_format {time_format!r} (in {source})",
            )
        return parsed
    for target in (pa.date32(), pa.timestamp("s"), pa.timestamp("ns")):
        try:
            return pc.cast(column, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    for i, value in enumerate(column.to_pylist()):
        try:
            pc.cast(pa.array([value]), pa.timestamp("ns"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise ValidationError(
                "path",
                f"cannot read {short_repr(value)} in column {name!r} at {row_label(int(rows[i]), is_csv)} as a time; "
                f"expected ISO 8601 dates or datetimes (2024-01-31, 2024-01-31 16:00:00), or numbers; "
                f"for another layout give time_format (in {source})",
            ) from None
    raise ValidationError("path", f"cannot read column {name!r} as one kind of time: its values mix layouts (in {source})")


def _numbers(column, name: str, role: str, rows: np.ndarray, is_csv: bool, source: str) -> np.ndarray:
    """A price or feature column as float64, missing values as NaN; text that is not a number is an error."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_null(kind):  # an empty column
        return np.full(len(column), np.nan)
    if pa.types.is_decimal(kind):
        return np.array([np.nan if v is None else float(v) for v in column.to_pylist()], dtype=np.float64)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # One cell that is not a number turns a whole CSV column into text: name that cell.
        out = np.empty(len(column), dtype=np.float64)
        for i, value in enumerate(column.to_pylist()):
            try:
                out[i] = np.nan if value is None else float(value)
            except ValueError:
                raise ValidationError(
                    "path",
                    f"expected numbers in {'price' if role == 'assets' else 'feature'} column {name!r}, got "
                    f"{short_repr(value)} at {row_label(int(rows[i]), is_csv)} (in {source})",
                ) from None
        return out
    hint = "list the price columns in assets" if role == "assets" else "drop it from features"
    raise ValidationError(role, f"column {name!r} holds {kind} values, not numbers; {hint} (in {source})")


def _check_duplicates(table: PriceTable) -> None:
    same = np.flatnonzero(table.times[1:] == table.times[:-1])
    if same.size:
        i = int(same[0])
        first, second = sorted((int(table.rows[i]), int(table.rows[i + 1])))
        raise ValidationError(
            "path",
            f"duplicate time {format_time(table.times[i])} in column {table.time_column!r}: "
            f"{row_label(first, table.is_csv)} and {row_label(second, table.is_csv)}; each time must appear once "
            f"(in {table.source})",
        )


def _check_gaps(table: PriceTable, max_gap: float | None, unit: str | None) -> None:
    if max_gap is None or len(table.times) < 3:
        return
    times = table.times.astype(np.int64) if table.times.dtype.kind == "M" else table.times
    steps = np.diff(times).astype(np.float64)
    median = float(np.median(steps))
    large = np.flatnonzero(steps > max_gap * median)
    if large.size:
        i = int(large[0])
        raise ValidationError(
            "path",
            f"gap of {_format_step(steps[i], unit)} between {table.where(i)} and {table.where(i + 1)}: more than "
            f"max_gap={max_gap:g} times the median step of {_format_step(median, unit)}; add the missing rows, or "
            f"raise max_gap (null allows any gap) (in {table.source})",
        )


def _check_values(table: PriceTable, assets_listed: bool) -> None:
    bad = ~(table.prices > 0)  # NaN (a missing price) is not > 0 either
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        value = table.prices[i, j]
        got = "a missing value" if np.isnan(value) else f"{value:g}"
        # Without an assets list every other column is read as prices: a feature column (one with
        # negative values) lands here.
        feature_like = not assets_listed and bool((table.prices[:, j] < 0).any())
        hint = "; a column that is not a price belongs in features" if feature_like else ""
        raise ValidationError(
            "path",
            f"expected prices > 0 in column {table.assets[j]!r}, got {got} at {table.where(i)}{hint} (in {table.source})",
        )
    bad = ~np.isfinite(table.features)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        value = table.features[i, j]
        got = "a missing value" if np.isnan(value) else f"{value:g}"
        raise ValidationError(
            "path",
            f"expected finite numbers in feature column {table.feature_columns[j]!r}, got {got} at {table.where(i)} "
            f"(in {table.source})",
        )


def date_splits(times: np.ndarray, val_start: Any, test_start: Any) -> tuple[slice, slice, slice]:
    """Row slices: train before ``val_start``, val from it to before ``test_start``, test from it on."""
    for key, value in (("val_start", val_start), ("test_start", test_start)):
        if value is None:
            other = "test_start" if key == "val_start" else "val_start"
            raise ValidationError(key, f"expected a time, since {other} is given (split dates come in pairs), got None")
    val_time = _as_time("val_start", val_start, times)
    test_time = _as_time("test_start", test_start, times)
    if not val_time < test_time:
        raise ValidationError(
            "test_start", f"expected a time after val_start {short_repr(val_start)}, got {short_repr(test_start)}"
        )
    n_train = int(np.searchsorted(times, val_time, side="left"))
    n_val = int(np.searchsorted(times, test_time, side="left")) - n_train
    n_test = len(times) - n_train - n_val
    if min(n_train, n_val, n_test) < 2:
        first, last = format_time(times[0]), format_time(times[-1])
        key = "test_start" if n_test < 2 else "val_start"
        raise ValidationError(
            key,
            f"val_start={short_repr(val_start)} and test_start={short_repr(test_start)} give splits of "
            f"{n_train}/{n_val}/{n_test} rows of the usable times {first}..{last}; each needs at least 2",
        )
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, len(times))


def _as_time(key: str, value: Any, times: np.ndarray) -> Any:
    """A split time in the time column's kind: datetime64 for a date column, a float for numbers."""
    if times.dtype.kind == "M":
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value.strip())  # dates, datetimes, offsets, Z
            except ValueError:
                pass
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)  # the column's UTC wall time
        if isinstance(value, (str, datetime.date, np.datetime64)):
            try:
                return np.datetime64(value)
            except ValueError:
                pass
        raise ValidationError.expected(key, "an ISO 8601 date or datetime such as '2024-01-31'", value)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise ValidationError.expected(key, "a number (the time column holds numbers)", value)
    return float(value)
