"""Where the tables live and how they are written and read (local paths or pyarrow URIs).

Layout: ``<sweep>/tables/{trials,events,equity}/stage=<stage>/part-0.parquet``.  Each stage partition
is written into a hidden temporary folder beside its final place and then swapped in with two
renames, so a reader sees either the old partition or the new one, never a half-written file.
Hidden names (leading ".") are skipped by pyarrow.dataset and DuckDB's hive discovery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

TABLES_DIR = "tables"
TABLE_NAMES = ("trials", "events", "equity")
PARTITIONING = ds.partitioning(pa.schema([("stage", pa.string())]), flavor="hive")


def resolve(
    path: str | os.PathLike, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, a URI, or a path on `filesystem`."""
    if filesystem is not None:
        return filesystem, str(path).rstrip("/") or "/"
    text = os.fspath(path)
    if "://" in text:
        fs, inner = pafs.FileSystem.from_uri(text)
        return fs, inner.rstrip("/") or "/"
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def join(first: str, *rest: str) -> str:
    return "/".join([first.rstrip("/")] + [p.strip("/") for p in rest])


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def list_dir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_json_object(fs: pafs.FileSystem, path: str, name: str,
                     notes: list[str] | None = None) -> tuple[dict | None, str | None]:
    """(the JSON object in a file, None) or (None, what is wrong with it, naming the file as `name`).

    Containers nested deeper than _schema.MAX_JSON_DEPTH become null, with a note in `notes`.
    """
    from ._schema import MAX_JSON_DEPTH, clip_depth

    try:
        data = read_bytes(fs, path)
    except OSError as exc:
        return None, f"{name} unreadable ({exc})"
    if not data.strip():
        return None, f"{name} is empty (half-written?)"
    try:
        obj = json.loads(data.decode("utf-8"))  # JSON files are UTF-8 (RFC 8259)
    except UnicodeDecodeError as exc:
        return None, f"{name} is not UTF-8 ({exc})"
    except json.JSONDecodeError as exc:
        return None, f"{name} is not valid JSON ({exc}; half-written?)"
    except RecursionError:
        return None, f"{name} is nested too deeply to read"
    if not isinstance(obj, dict):
        return None, f"{name} is not a JSON object (got {type(obj).__name__})"
    obj, clipped = clip_depth(obj)
    if clipped and notes is not None:
        shown = ", ".join(clipped[:3]) + (f" and {len(clipped) - 3} more" if len(clipped) > 3 else "")
        notes.append(f"{name} {shown}: nested deeper than {MAX_JSON_DEPTH} levels; null")
    return obj, None


def partition_dir_name(stage: str) -> str:
    # The same percent-encoding pyarrow's hive partitioning decodes on read.
    return "stage=" + quote(stage, safe="")


def tables_root(fs: pafs.FileSystem, path: str) -> str | None:
    """The tables folder for a sweep folder, or `path` itself when it is a tables folder."""
    for candidate in (join(path, TABLES_DIR), path):
        if any(is_dir(fs, join(candidate, name)) for name in TABLE_NAMES):
            return candidate
    return None


def read_partition(fs: pafs.FileSystem, table_dir: str, stage: str) -> pa.Table | None:
    """One stage partition as a table (without the stage column), or None when absent."""
    path = join(table_dir, partition_dir_name(stage))
    if not is_dir(fs, path):
        return None
    return ds.dataset(path, format="parquet", filesystem=fs).to_table()


def partition_schema(fs: pafs.FileSystem, table_dir: str, stage: str) -> pa.Schema | None:
    path = join(table_dir, partition_dir_name(stage))
    if not is_dir(fs, path):
        return None
    return ds.dataset(path, format="parquet", filesystem=fs).schema


def partition_filled_schema(
    fs: pafs.FileSystem, table_dir: str, stage: str, known: set[str]
) -> pa.Schema | None:
    """A partition's schema without the columns outside `known` that hold only nulls.

    Uses the Parquet footers' null counts, so the data is not read.  Such columns exist only
    because another partition had values for them when this one was written.
    """
    path = join(table_dir, partition_dir_name(stage))
    if not is_dir(fs, path):
        return None
    dataset = ds.dataset(path, format="parquet", filesystem=fs)
    schema = dataset.schema
    candidates = [f.name for f in schema if f.name not in known]
    filled: set[str] = set()
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        for name in candidates:
            index = schema.get_field_index(name)
            if pa.types.is_null(schema.field(name).type) or index < 0:
                continue
            for group in range(meta.num_row_groups):
                stats = meta.row_group(group).column(index).statistics
                if stats is None or not stats.has_null_count or stats.null_count < meta.row_group(group).num_rows:
                    filled.add(name)
                    break
    return pa.schema([f for f in schema if f.name in known or f.name in filled])


def existing_stages(fs: pafs.FileSystem, table_dir: str) -> list[str]:
    """Stages that have a partition folder under `table_dir`."""
    return sorted(
        unquote(info.base_name[len("stage="):])
        for info in list_dir(fs, table_dir)
        if info.type == pafs.FileType.Directory and info.base_name.startswith("stage=")
    )


def open_dataset(fs: pafs.FileSystem, table_dir: str) -> ds.Dataset | None:
    """The hive-partitioned dataset with the union of its partitions' schemas, or None."""
    if not is_dir(fs, table_dir):
        return None
    dataset = ds.dataset(table_dir, format="parquet", filesystem=fs, partitioning=PARTITIONING)
    fragments = list(dataset.get_fragments())
    if not fragments:
        return None
    # Partitions normally share one schema (ingest rewrites them when it grows); unifying here
    # keeps reads correct even for tables written by an older version.
    schema = pa.unify_schemas(
        [f.physical_schema for f in fragments] + [PARTITIONING.schema],
        promote_options="permissive",
    )
    return ds.dataset(
        table_dir, format="parquet", filesystem=fs, partitioning=PARTITIONING, schema=schema
    )


def write_partition(
    fs: pafs.FileSystem, table_dir: str, stage: str, table: pa.Table | None
) -> None:
    """Atomically replace one stage partition with `table` (None or empty removes it)."""
    final = join(table_dir, partition_dir_name(stage))
    token = uuid.uuid4().hex[:12]
    fs.create_dir(table_dir, recursive=True)
    tmp = join(table_dir, f".{partition_dir_name(stage)}.tmp-{token}")
    if table is not None and table.num_rows:
        try:
            ds.write_dataset(
                table,
                tmp,
                format="parquet",
                filesystem=fs,
                basename_template="part-{i}.parquet",
                file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
                max_rows_per_group=1 << 17,  # several row groups: parallel decoding on read
                existing_data_behavior="error",
            )
        except BaseException:
            # A full disk, a bad value, Ctrl-C: leave nothing behind (the next ingest would
            # remove it too, but a failed write should not need one).
            with contextlib.suppress(OSError):
                if is_dir(fs, tmp):
                    fs.delete_dir(tmp)
            raise
    else:
        tmp = None
    old = None
    if is_dir(fs, final):
        old = join(table_dir, f".{partition_dir_name(stage)}.old-{token}")
        fs.move(final, old)
    if tmp is not None:
        fs.move(tmp, final)
    if old is not None:
        fs.delete_dir(old)


def remove_stale_temporaries(fs: pafs.FileSystem, table_dir: str) -> None:
    """Delete leftovers of an interrupted ingest (hidden .tmp-/.old- partition folders)."""
    for info in list_dir(fs, table_dir):
        name = info.base_name
        if not name.startswith(".stage="):
            continue
        final = join(table_dir, name[1:].rsplit(".", 1)[0])
        if ".old-" in name and not is_dir(fs, final):
            # Interrupted between the two renames of a swap: put the old partition back.
            fs.move(info.path, final)
        elif ".tmp-" in name or ".old-" in name:
            logger.info("removing leftover %s from an interrupted ingest", info.path)
            fs.delete_dir(info.path)


def read_csv_table(
    fs: pafs.FileSystem,
    path: str,
    name: str,
    notes: list[str],
    convert: pacsv.ConvertOptions,
    *,
    newlines_in_values: bool = False,
) -> pa.Table | None:
    """A CSV file a run wrote, as a table; None (with a note) when unreadable or empty.

    Malformed rows (a half-written last line) are skipped and counted in a note, never fatal.
    """
    try:
        data = read_bytes(fs, path)
    except OSError as exc:
        notes.append(f"{name} unreadable ({exc})")
        return None
    if not data.strip():
        notes.append(f"{name} is empty")
        return None
    skipped: list[int] = []

    def skip(row: Any) -> str:
        skipped.append(row.number if row.number is not None else -1)
        return "skip"

    def read(options: pacsv.ConvertOptions) -> pa.Table:
        skipped.clear()
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=False, block_size=max(1 << 20, 2 * len(data))),
            parse_options=pacsv.ParseOptions(newlines_in_values=newlines_in_values, invalid_row_handler=skip),
            convert_options=options,
        )

    try:
        table = read(convert)
    except pa.ArrowInvalid:
        # One value that does not fit its column (a word in a number column, bytes that are not
        # UTF-8) fails the whole read: read every column as bytes and convert value by value.
        try:
            table = _read_leniently(read, data, name, notes, convert)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            notes.append(f"{name} unreadable ({str(exc).splitlines()[0]})")
            return None
    except pa.ArrowNotImplementedError as exc:
        notes.append(f"{name} unreadable ({str(exc).splitlines()[0]})")
        return None
    if skipped:
        notes.append(f"{name}: skipped {len(skipped)} malformed row(s) (half-written line?)")
    return table


def _read_leniently(read: Any, data: bytes, name: str, notes: list[str],
                    convert: pacsv.ConvertOptions) -> pa.Table:
    """The CSV with each value that does not fit its column's type (or is not UTF-8) as null,
    and a note per column naming the rows. Columns without a declared type become int64,
    double or string, the first that holds every value (pyarrow's inference, less dates)."""
    header = pacsv.read_csv(pa.py_buffer(data), read_options=pacsv.ReadOptions(
        use_threads=False, skip_rows_after_names=(1 << 31) - 1, encoding="latin-1"))
    names = header.column_names  # latin-1 decodes any bytes: the names are only used to type columns
    declared = dict(convert.column_types)
    as_bytes = pacsv.ConvertOptions(
        column_types={n: pa.binary() for n in names}, null_values=convert.null_values,
        strings_can_be_null=True, quoted_strings_can_be_null=True)
    raw = read(as_bytes)
    columns = {}
    for column_name in raw.column_names:
        values = raw[column_name].to_pylist()
        texts: list[str | None] = []
        bad: list[int] = []
        for row, value in enumerate(values):
            try:
                texts.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(None)
                bad.append(row + 1)
        if bad:
            notes.append(f"{name} column {column_name!r}: {_rows(bad)} not UTF-8; null")
        strings = pa.array(texts, pa.string())
        type_ = declared.get(column_name)
        if type_ is None:
            for candidate in (pa.int64(), pa.float64()):
                try:
                    strings = strings.cast(candidate)
                    break
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    continue
            columns[column_name] = strings
            continue
        try:
            columns[column_name] = strings.cast(type_)
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        fitted, misfits = [], []
        for row, text in enumerate(texts):
            try:
                fitted.append(None if text is None else pa.array([text]).cast(type_)[0].as_py())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                fitted.append(None)
                misfits.append((row + 1, text))
        shown = ", ".join(f"{text!r:.30}" for _, text in misfits[:3])
        notes.append(f"{name} column {column_name!r}: {_rows([r for r, _ in misfits])} not "
                     f"{type_} ({shown}); null")
        columns[column_name] = pa.array(fitted, type_)
    return pa.table(columns)


def _rows(numbers: list[int]) -> str:
    """ "row 3" / "rows 3, 7, 9 and 4 more" (1-based data rows, the header not counted)."""
    shown = ", ".join(map(str, numbers[:5])) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"row{'s' if len(numbers) > 1 else ''} {shown}"
