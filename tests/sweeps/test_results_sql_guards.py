"""`query --sql` and `--where`: read-only over the sweep's own tables, every result type printable."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

pytest.importorskip("duckdb")

from psann.errors import ValidationError
from sweeps.results import WhereError, ingest_sweep, query, sql
from sweeps.results._cli import main
from sweeps.results._render import iso_duration

try:
    from ._trial_folders import standard_sweep
except ImportError:
    from _trial_folders import standard_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    path = standard_sweep(tmp_path_factory.mktemp("g"))
    ingest_sweep(path)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# -- reading other files, writing, configuration: refused ----------------------------------------------

@pytest.mark.parametrize(
    ("statement", "fragment"),
    [("SELECT * FROM read_csv('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
     ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
     ("SELECT * FROM glob('/etc/*')", "Permission Error"),
     ("COPY trials TO '{out}/x.csv'", "not COPY"),
     ("COPY (SELECT 1) TO '{out}/x.parquet' (FORMAT parquet)", "not COPY"),
     ("EXPLAIN ANALYZE COPY trials TO '{out}/x.csv'", "EXPLAIN explains a SELECT here, not COPY"),
     ("ATTACH '{out}/x.db' AS x", "not ATTACH"),
     ("INSTALL httpfs", "not LOAD"),
     ("LOAD httpfs", "not LOAD"),
     ("SET enable_external_access = true", "not SET"),
     ("RESET enable_external_access", "not SET"),
     ("PRAGMA database_list", "not PRAGMA"),
     ("CALL pragma_version()", "not CALL"),
     ("CREATE TABLE t AS SELECT 1", "not CREATE"),
     ("SELECT * FROM query('COPY trials TO ''{out}/x.csv''')", "Expected a single SELECT statement")],
)
def test_sql_cannot_read_other_files_write_or_change_settings(sweep, tmp_path, statement, fragment):
    with pytest.raises(ValidationError) as info:
        sql(sweep, statement.format(out=tmp_path))
    assert info.value.key == "--sql" and fragment in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_sql_cannot_read_another_parquet_file_even_a_copy_of_the_tables(sweep, tmp_path):
    source = next((sweep / "tables" / "trials").rglob("*.parquet"))
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(source.read_bytes())
    for statement in (f"SELECT count(*) FROM read_parquet('{copy}')",
                      f"SELECT count(*) FROM '{copy}'",
                      f"SELECT count(*) FROM parquet_metadata('{copy}')"):
        with pytest.raises(ValidationError) as info:
            sql(sweep, statement)
        assert info.value.key == "--sql"
    with pytest.raises(ValidationError, match="the query may read only the sweep's tables"):
        sql(sweep, f"SELECT count(*) FROM read_parquet('{copy}')")
    assert sql(sweep, "SELECT count(*) AS n FROM trials").to_pylist() == [{"n": 8}]


@pytest.mark.parametrize(
    "where",
    ["(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
     "exists (SELECT 1 FROM read_text('/etc/hostname'))",
     "true); COPY trials TO '/tmp/x.csv'; SELECT (1",
     "true) UNION SELECT * FROM read_csv('/etc/passwd') WHERE (true",
     "status in (SELECT status FROM trials)"],
)
def test_where_cannot_read_other_files_or_run_statements(sweep, where):
    with pytest.raises(WhereError) as info:
        query(sweep, where=where)
    assert info.value.key == "--where"


@pytest.mark.parametrize(("flag", "value"), [("--where", ""), ("--where", "   "), ("--sql", ""), ("--sql", " -- x")])
def test_empty_where_or_sql_is_bad_input(sweep, flag, value):
    code, out, err = run_cli("query", sweep, flag, value)
    assert code == 2 and out == "" and err.startswith(f"error: {flag}:") and "empty" in err


def test_pivot_without_an_in_list_says_to_list_the_values(sweep):
    with pytest.raises(ValidationError, match="list the values to pivot on"):
        sql(sweep, "PIVOT trials ON status USING count(*)")
    table = sql(sweep, "PIVOT (SELECT stage, status FROM trials) ON status IN ('SUCCESS', 'ERROR') "
                       "USING count(*) ORDER BY stage")
    assert table.to_pylist() == [{"stage": "hisso", "SUCCESS": 2, "ERROR": 1},
                                 {"stage": "smoke", "SUCCESS": 3, "ERROR": 0}]


# -- duplicate column names --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("statement", "name"),
    [("SELECT 1 AS a, 2 AS a", "a"),
     ("SELECT * FROM trials t JOIN events e ON t.trial_id = e.trial_id LIMIT 1", "sweep"),
     ("SELECT trial_id, status, trial_id FROM trials", "trial_id")],
)
def test_result_with_duplicate_column_names_is_refused(sweep, statement, name):
    with pytest.raises(ValidationError) as info:
        sql(sweep, statement)
    assert info.value.key == "--sql" and f"more than one column named {name!r}" in str(info.value)
    code, _, err = run_cli("query", sweep, "--sql", statement)
    assert code == 2 and f"column named {name!r}" in err


def test_columns_named_twice_is_refused(sweep):
    code, _, err = run_cli("query", sweep, "--columns", "trial_id,status,trial_id")
    assert code == 2 and "error: --columns: column 'trial_id' is named twice" in err


# -- every result type in every format ----------------------------------------------------------------

# (SQL expression, JSON value, text/CSV cell)
TYPES = [
    ("42::TINYINT", 42, "42"),
    ("-7::BIGINT", -7, "-7"),
    ("18446744073709551615::UBIGINT", 18446744073709551615, "18446744073709551615"),
    ("170141183460469231731687303715884105727::HUGEINT", 170141183460469231731687303715884105727,
     "170141183460469231731687303715884105727"),
    ("12345678901234567890123::VARINT", "12345678901234567890123", "12345678901234567890123"),
    ("0.25::DOUBLE", 0.25, "0.25"),
    ("1.5::FLOAT", 1.5, "1.5"),
    ("'nan'::DOUBLE", None, "nan"),
    ("'-inf'::DOUBLE", None, "-inf"),
    ("1.50::DECIMAL(10, 2)", 1.5, "1.50"),
    ("'it''s, \"quoted\"\nnew line'", "it's, \"quoted\"\nnew line", "it's, \"quoted\"\nnew line"),
    ("true", True, "true"),
    ("DATE '2026-11-23'", "2026-11-23", "2026-11-23"),
    ("TIME '18:00:01.5'", "18:00:01.500000", "18:00:01.500000"),
    ("TIMESTAMP '2026-11-23 18:00:00'", "2026-11-23T18:00:00", None),  # CSV adds .000000
    ("TIMESTAMPTZ '2026-11-23 18:00:00+00'", "2026-11-23T18:00:00+00:00", None),
    ("INTERVAL '1 year 2 months 3 days 04:05:06.5'", "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
    ("[1, 2, NULL]", [1, 2, None], "[1, 2, null]"),
    ("[[1.5], []]", [[1.5], []], "[[1.5], []]"),
    ("{'a': 1, 'b': 'x'}", {"a": 1, "b": "x"}, '{"a": 1, "b": "x"}'),
    ("MAP {'k': 1.5}", {"k": 1.5}, '{"k": 1.5}'),
    ("MAP {1: 'x'}", {"1": "x"}, '{"1": "x"}'),
    ("'\\x00ab\\xFF'::BLOB", "\\x00ab\\xFF", "\\x00ab\\xFF"),
    ("'101'::BIT", "101", "101"),
    ("'a'::ENUM('a', 'b')", "a", "a"),
    ("[1, 2]::INTEGER[2]", [1, 2], "[1, 2]"),
    ("union_value(n := 1)", 1, None),
    ("NULL", None, ""),
    ("[1.0, 'nan'::DOUBLE]", [1.0, None], "[1.0, null]"),
]


@pytest.mark.parametrize(("expression", "as_json", "as_text"), TYPES, ids=[t[0][:30] for t in TYPES])
def test_every_duckdb_result_type_prints_in_every_format(sweep, expression, as_json, as_text):
    statement = f"SELECT {expression} AS v, 1 AS n"
    code, out, err = run_cli("query", sweep, "--sql", statement, "--format", "json")
    assert code == 0, err
    assert json.loads(out) == [{"v": as_json, "n": 1}]
    code, out, err = run_cli("query", sweep, "--sql", statement, "--format", "csv")
    assert code == 0, err
    table = pacsv.read_csv(pa.py_buffer(out.encode()), convert_options=pacsv.ConvertOptions(
        column_types={"v": pa.string()}, strings_can_be_null=False))
    assert table.column_names == ["v", "n"] and table.num_rows == 1
    if as_text is not None:
        assert table["v"][0].as_py() == as_text
    code, out, err = run_cli("query", sweep, "--sql", statement, "--format", "table")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["v", "n"] and lines[-1] == "(1 row)" and len(lines) == 4
    if as_text is not None and "\n" not in as_text:
        assert lines[2].startswith(as_text[:30]) or lines[2].strip().startswith(as_text[:30])


def test_every_column_of_the_tables_prints_in_every_format(sweep):
    for fmt in ("table", "csv", "json"):
        for table in ("trials", "events", "equity"):
            code, out, err = run_cli("query", sweep, "--sql", f"SELECT * FROM {table}", "--format", fmt)
            assert code == 0 and out, (table, fmt, err)


def test_an_empty_result_prints_in_every_format(sweep):
    for fmt, expected in (("json", "[]\n"), ("csv", '"trial_id"\n')):
        code, out, _ = run_cli("query", sweep, "--sql", "SELECT trial_id FROM trials WHERE false", "--format", fmt)
        assert code == 0 and out == expected
    code, out, _ = run_cli("query", sweep, "--sql", "SELECT trial_id FROM trials WHERE false")
    assert code == 0 and out.splitlines()[-1] == "(0 rows)"


@pytest.mark.parametrize(("months", "days", "nanos", "text"),
                         [(0, 0, 0, "PT0S"), (-1, 0, 0, "P-1M"), (0, -2, -1_500_000_000, "P-2DT-1.5S"),
                          (25, 0, 3_600_000_000_000, "P2Y1MT1H")])
def test_intervals_print_as_iso_8601_durations(months, days, nanos, text):
    assert iso_duration(months, days, nanos) == text
