"""Reading a trial's test evaluation (evaluation.json) and equity curves (equity_<split>.csv).

After each stage the sweep runner evaluates its top trials on the test split from their best
checkpoint and writes evaluation.json (psann.contract.EVALUATION_FIELDS) plus
evaluation_equity_<split>.csv beside the run's files; a HISSO run with prices writes its own
equity_<split>.csv. evaluation.json becomes the eval_* columns of the trial's row, the CSVs rows
of the `equity` table. A bad file is an ingest note, never an error: the trial keeps its row.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from psann import contract as C
from psann.contract import flatten_keys

from . import _schema as S
from . import _store

# psann.contract.equity_file's names: equity_<split>.csv (source "run") and
# evaluation_equity_<split>.csv (source "evaluation").
EQUITY_FILE = re.compile(r"^(evaluation_)?equity_(.+)\.csv$")

_EVALUATION_TYPES = dict(S.EVALUATION_COLUMNS)
_EQUITY_TYPES = dict(S.EQUITY_CSV_COLUMNS)
_EQUITY_CONVERT = pacsv.ConvertOptions(column_types=_EQUITY_TYPES, null_values=[""],
                                       strings_can_be_null=True)


def equity_files(files: dict[str, pafs.FileInfo]) -> list[tuple[str, str, str]]:
    """(file name, source, split) of each equity CSV in a trial folder's listing, by name."""
    found = []
    for name in sorted(files):
        match = EQUITY_FILE.match(name)
        if match and files[name].type == pafs.FileType.File:
            found.append((name, "evaluation" if match.group(1) else "run", match.group(2)))
    return found


def evaluation_columns(
    fs: pafs.FileSystem, files: dict[str, pafs.FileInfo], row: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    """The eval_* columns of a trial row from its evaluation.json (all null without one)."""
    out: dict[str, Any] = {name: None for name in _EVALUATION_TYPES}
    info = files.get(C.EVALUATION_FILE)
    if info is None:
        return out
    obj, problem = _store.read_json_object(fs, info.path, C.EVALUATION_FILE, notes)
    if problem is not None:
        notes.append(f"{problem}; eval_* columns left null")
        return out
    missing = [key for key in C.EVALUATION_KEYS if key not in obj]
    if missing:
        notes.append(f"{C.EVALUATION_FILE} lacks {', '.join(missing)}")
    for key in S.EVALUATION_ROW_KEYS:
        value = obj.get(key)
        if value is not None and str(value) != row[key]:
            notes.append(f"{C.EVALUATION_FILE} names {key} {value!r}, not this trial's {row[key]!r}")
    for key, value in flatten_keys(obj).items():
        if key in S.EVALUATION_ROW_KEYS:
            continue
        name = S.EVALUATION_RENAMED.get(key, f"eval_{key}")
        if name in _EVALUATION_TYPES:
            out[name], note = S.coerce_known(value, _EVALUATION_TYPES[name])
            if note:
                notes.append(f"{C.EVALUATION_FILE} {key}: {note}")
        elif value is not None:
            if name in S.KNOWN_TRIAL_TYPES:
                notes.append(f"{C.EVALUATION_FILE} {key}: its column {name!r} is taken; left out")
            else:  # e.g. a reward strategy's own portfolio metric: an extra column, as in metrics.json
                out[name], note = S.extra_value(value)
                if note:
                    notes.append(f"{C.EVALUATION_FILE} {key}: {note}; null")
    return out


def equity_table(
    fs: pafs.FileSystem, sweep: str, stage: str, trial_id: str,
    files: dict[str, pafs.FileInfo], notes: list[str],
) -> pa.Table | None:
    """The rows of every equity CSV of a trial folder, with their key columns; None without any."""
    parts = []
    for name, source, split in equity_files(files):
        table = _read_equity_csv(fs, files[name].path, name, notes)
        if table is None:
            continue
        n = table.num_rows
        keys = {"sweep": sweep, "stage": stage, "trial_id": trial_id, "source": source, "split": split}
        columns = {key: pa.array([value] * n, S.STR) for key, value in keys.items()}
        columns.update({c: table[c] for c in table.column_names})
        parts.append(pa.table(columns))
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


def _read_equity_csv(fs: pafs.FileSystem, path: str, name: str, notes: list[str]) -> pa.Table | None:
    table = _store.read_csv_table(fs, path, name, notes, _EQUITY_CONVERT)
    if table is None:
        return None
    missing = [c for c in C.EQUITY_COLUMNS if c not in table.column_names]
    if missing:
        notes.append(f"{name} lacks column(s) {', '.join(missing)} (left null)")
        for column in missing:
            table = table.append_column(column, pa.nulls(table.num_rows, _EQUITY_TYPES[column]))
    order = list(C.EQUITY_COLUMNS) + sorted(set(table.column_names) - set(C.EQUITY_COLUMNS))
    return table.select(order)
