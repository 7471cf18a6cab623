"""sweeps.results query / sql / summary, from Python and from the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

pytest.importorskip("duckdb")  # part of the sweeps extra, like pyarrow

from psann.errors import ValidationError
from sweeps.results import WhereError, ingest_sweep, load_events, load_trials, query, sql, summary
from sweeps.results._cli import main

try:
    from ._trial_folders import standard_sweep
except ImportError:
    from _trial_folders import standard_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    path = standard_sweep(tmp_path_factory.mktemp("q"))
    ingest_sweep(path)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_where_filters_rows(sweep):
    table = query(sweep, where="status == 'SUCCESS' and params_hisso__window >= 16")
    assert sorted(table["trial_id"].to_pylist()) == ["bbbbb_00000", "bbbbb_00001"]


def test_sort_and_top_give_the_best_trials_nulls_last(sweep):
    everything = load_trials(sweep).to_pylist()
    expected = sorted(everything, key=lambda r: r["val_loss"])[:3]
    table = query(sweep, sort="val_loss", top=3)
    assert table["trial_id"].to_pylist() == [r["trial_id"] for r in expected]
    worst = query(sweep, sort=["val_loss"], descending=True, top=1)
    assert worst["val_loss"][0].as_py() == max(r["val_loss"] for r in everything)
    with_nulls = query(sweep, sort="amp_dtype")
    assert with_nulls["amp_dtype"].to_pylist()[:2] == ["bfloat16", "float16"]
    assert with_nulls["amp_dtype"].to_pylist()[2:] == [None] * 6
    assert query(sweep, sort="amp_dtype", descending=True)["amp_dtype"].to_pylist()[:2] == [
        "float16", "bfloat16"]


def test_top_without_sort_and_columns_select(sweep):
    table = query(sweep, top=2, columns=["trial_id", "val_loss"])
    assert table.column_names == ["trial_id", "val_loss"] and table.num_rows == 2


def test_stage_limits_rows_and_unknown_stage_lists_the_known_ones(sweep):
    assert set(query(sweep, stage="smoke")["stage"].to_pylist()) == {"smoke"}
    assert query(sweep, stage=["smoke", "hisso"]).num_rows == 8
    with pytest.raises(ValidationError) as info:
        query(sweep, stage="hiso")
    assert info.value.key == "--stage"
    assert info.value.reason == "stage 'hiso' is not in the tables (did you mean 'hisso'?); stages: hisso, smoke"


def test_query_on_events_table(sweep):
    table = query(sweep, table="events", where="event == 'epoch' and phase == 'warm_start'",
                  columns=["trial_id", "epoch", "val_loss"])
    assert table["trial_id"].to_pylist() == ["bbbbb_00000", "bbbbb_00000"]
    assert table["epoch"].to_pylist() == [1, 2]


def test_loaded_tables_put_stage_right_after_sweep(sweep):
    assert load_trials(sweep).column_names[:3] == ["sweep", "stage", "trial_id"]
    assert load_events(sweep).column_names[:3] == ["sweep", "stage", "trial_id"]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [(dict(columns=["trial_id", "val_los"]), "--columns"), (dict(sort="val_los"), "--sort"),
     (dict(where="val_los < 1"), "--where")],
)
def test_unknown_column_names_it_and_lists_the_known_ones(sweep, kwargs, key):
    with pytest.raises(ValidationError) as info:
        query(sweep, **kwargs)
    assert info.value.key == key and isinstance(info.value, WhereError) == (key != "--columns")
    message = str(info.value)
    assert "unknown column 'val_los'" in message and "(did you mean 'val_loss'?)" in message
    assert "available columns: sweep, stage, trial_id" in message and "params_hisso__window" in message


@pytest.mark.parametrize(
    ("where", "fragment"),
    [("val_loss <", "syntax error in 'val_loss <': the condition ends too early"),
     ("status == 1", "cannot evaluate 'status == 1': Conversion Error"),
     ("val_loss < 1 and", "the condition ends too early"),
     ("__import__('os')", "Scalar Function with name __import__ does not exist"),
     ("val_loss = = 1", "syntax error in 'val_loss = = 1'"),
     ("val_loss", "gives DOUBLE values, not true/false"),
     ("true); DROP VIEW trials; SELECT (1", "is not a single condition")],
)
def test_bad_filter_expression_is_a_clear_error(sweep, where, fragment):
    with pytest.raises(WhereError) as info:
        query(sweep, where=where)
    assert info.value.key == "--where" and fragment in str(info.value)


@pytest.mark.parametrize(
    "where",
    ["val_loss < 0.5 and status == 'SUCCESS'",
     "stage in ('smoke', 'hisso') and not (error is null)",
     "amp_enabled or params_hisso__window >= 32",
     "status = 'SUCCESS' and params_hisso__window <> 8",
     "status != 'ERROR' and status not in ('HUNG', 'PRUNED')",
     "STATUS == 'SUCCESS' AND Val_Loss IS NOT NULL"],
)
def test_documented_filters_match_the_same_rows_as_python(sweep, where):
    rows = load_trials(sweep).to_pylist()
    expected = {
        "val_loss < 0.5 and status == 'SUCCESS'":
            lambda r: r["val_loss"] is not None and r["val_loss"] < 0.5 and r["status"] == "SUCCESS",
        "stage in ('smoke', 'hisso') and not (error is null)":
            lambda r: r["stage"] in ("smoke", "hisso") and r["error"] is not None,
        "amp_enabled or params_hisso__window >= 32":
            lambda r: r["amp_enabled"] is True or (r["params_hisso__window"] or 0) >= 32,
        "status = 'SUCCESS' and params_hisso__window <> 8":
            lambda r: r["status"] == "SUCCESS" and r["params_hisso__window"] not in (None, 8),
        "status != 'ERROR' and status not in ('HUNG', 'PRUNED')":
            lambda r: r["status"] not in (None, "ERROR", "HUNG", "PRUNED"),
        "STATUS == 'SUCCESS' AND Val_Loss IS NOT NULL":
            lambda r: r["status"] == "SUCCESS" and r["val_loss"] is not None,
    }[where]
    wanted = sorted(r["trial_id"] for r in rows if expected(r))
    assert wanted, f"the fixture has no row for {where!r}; the test would prove nothing"
    assert sorted(query(sweep, where=where)["trial_id"].to_pylist()) == wanted


@pytest.mark.parametrize("table", ["trials", "events"])
def test_every_column_can_be_named_bare_in_a_filter(sweep, table):
    data = query(sweep, table=table)
    for name in data.column_names:
        assert query(sweep, table=table, where=f"{name} is null or {name} is not null").num_rows == data.num_rows, name


def test_timestamp_columns_compare_with_iso_strings(sweep):
    table = query(sweep, table="events", where="timestamp >= '2026-11-23 18:00:13'")
    assert table.num_rows > 0
    assert all(t.isoformat() >= "2026-11-23T18:00:13" for t in table["timestamp"].to_pylist())


def test_path_without_tables_says_to_ingest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results tables under .*ingest"):
        query(tmp_path)


def test_top_must_be_positive(sweep):
    with pytest.raises(ValidationError, match="--top: expected an int >= 1, got 0"):
        query(sweep, top=0)


def test_summary_counts_statuses_and_names_the_best_trial(sweep):
    rows = {r["stage"]: r for r in summary(sweep).to_pylist()}
    trials = load_trials(sweep).to_pylist()
    hisso = rows["hisso"]
    assert (hisso["trials"], hisso["SUCCESS"], hisso["PRUNED"], hisso["ERROR"], hisso["HUNG"]) == (
        5, 2, 1, 1, 1)
    assert hisso["INCOMPLETE"] == hisso["RUNNING"] == hisso["INTERRUPTED"] == 0
    best = min((r for r in trials if r["stage"] == "hisso" and r["status"] in ("SUCCESS", "PRUNED")),
               key=lambda r: r["val_loss_smoothed"])
    assert (hisso["best_trial_id"], hisso["best_val_loss_smoothed"]) == (
        best["trial_id"], best["val_loss_smoothed"])
    assert rows["smoke"]["SUCCESS"] == 3


def test_sql_exposes_trials_and_events(sweep):
    table = sql(sweep, "SELECT t.stage, count(*) AS epochs FROM events e JOIN trials t "
                       "USING (stage, trial_id) WHERE e.event = 'epoch' AND t.status = 'SUCCESS' "
                       "GROUP BY t.stage ORDER BY t.stage")
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"stage": "hisso", "epochs": 2 + 8 + 8},
                                 {"stage": "smoke", "epochs": 6}]


@pytest.mark.parametrize("statement", ["SELECT nope FROM trials",  # fails as it binds
                                       "SELECT CAST(status AS INTEGER) FROM trials"])  # as it runs
def test_sql_error_is_a_validation_error(sweep, statement):
    with pytest.raises(ValidationError, match="SQL statement failed") as info:
        sql(sweep, statement)
    assert info.value.key == "--sql"


def test_sql_and_filters_on_a_pyarrow_filesystem(sweep):
    # Not the local filesystem: the tables are registered as pyarrow datasets, still read-only.
    import pyarrow.fs as pafs

    fs = pafs.SubTreeFileSystem(str(sweep.parent), pafs.LocalFileSystem())
    assert sql(sweep.name, "SELECT count(*) AS n FROM trials", filesystem=fs).to_pylist() == [{"n": 8}]
    assert query(sweep.name, where="status == 'HUNG'", filesystem=fs)["trial_id"].to_pylist() == ["bbbbb_00004"]


@pytest.mark.parametrize(
    ("statement", "fragment"),
    [("SELECT 1; SELECT 2", "expected one SQL statement, got 2"),
     ("COPY trials TO 'out.csv'", "read-only), not COPY"),
     ("CREATE TABLE t AS SELECT * FROM trials", "not CREATE"),
     ("SET enable_external_access = true", "not SET"),
     ("ATTACH 'other.db'", "not ATTACH"),
     ("INSTALL httpfs", "only a SELECT")],
)
def test_sql_runs_one_reading_statement_only(sweep, tmp_path, monkeypatch, statement, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="--sql") as info:
        sql(sweep, statement)
    assert fragment in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_sql_reads_no_file_but_the_tables(sweep, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a\n1\n")
    with pytest.raises(ValidationError, match="SQL statement failed"):
        sql(sweep, f"SELECT * FROM read_csv('{other}')")
    with pytest.raises(ValidationError, match="SQL statement failed"):
        sql(sweep, f"SELECT count(*) FROM trials, read_text('{other}')")
    assert sql(sweep, "SELECT count(*) AS n FROM trials").to_pylist() == [{"n": 8}]
    assert sql(sweep, "FROM trials SELECT trial_id ORDER BY trial_id LIMIT 1").num_rows == 1


def test_without_duckdb_filters_and_sql_say_which_extra_installs_it(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ImportError, match=r"pip install 'psann-sweeps\[sweeps\]'"):
        sql(sweep, "SELECT 1")
    with pytest.raises(ImportError, match=r"psann-sweeps\[sweeps\]"):
        query(sweep, where="val_loss < 1")
    assert query(sweep, top=1).num_rows == 1  # loading and cutting need no DuckDB
    code, _, err = run_cli("query", sweep, "--sql", "SELECT 1")
    assert code == 1 and "pip install 'psann-sweeps[sweeps]'" in err


def test_cli_query_table_csv_and_json_formats(sweep):
    code, out, _ = run_cli("query", sweep, "--sort", "val_loss", "--top", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["stage", "trial_id", "status"] and lines[-1] == "(2 rows)"
    best = query(sweep, sort="val_loss", top=2)["trial_id"].to_pylist()
    assert [line.split()[1] for line in lines[2:4]] == best

    code, out, _ = run_cli("query", sweep, "--where", "stage == 'smoke'", "--columns",
                           "trial_id,val_loss", "--columns", "seed", "--format", "csv")
    table = pacsv.read_csv(pa.py_buffer(out.encode()))
    assert code == 0 and table.column_names == ["trial_id", "val_loss", "seed"]
    assert table.num_rows == 3

    code, out, _ = run_cli("query", sweep, "--table", "events", "--stage", "smoke", "--top", "1",
                           "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and row["event"] == "run_start" and row["timestamp"].startswith("2026-11-23T")


def test_cli_bad_input_goes_to_stderr_with_exit_code_2(sweep, tmp_path):
    code, out, err = run_cli("query", sweep, "--where", "(val_loss < 1")
    assert code == 2 and out == "" and err.startswith("error: --where: syntax error in '(val_loss < 1'")
    code, out, err = run_cli("query", sweep, "--sort", "val_los")
    assert code == 2 and out == "" and "error: --sort: unknown column 'val_los'" in err
    code, _, err = run_cli("query", sweep, "--stage", "hiso")
    assert code == 2 and "error: --stage:" in err
    code, _, err = run_cli("query", sweep, "--top", "0")
    assert code == 2 and "--top: expected an int >= 1" in err
    code, _, err = run_cli("query", sweep, "--sql", "DROP VIEW trials")
    assert code == 2 and "error: --sql: only a SELECT" in err
    code, _, err = run_cli("query", tmp_path)
    assert code == 2 and "no results tables" in err
    code, _, err = run_cli("query", sweep, "--sql", "SELECT 1", "--top", "3")
    assert code == 2 and "--sql replaces the other query flags" in err


def test_cli_failure_exit_code_is_1_and_interrupt_is_130(sweep, monkeypatch):
    from sweeps.results import _cli

    def conflict(path, **kwargs):
        raise _cli.SchemaConflictError("column 'x' is a number in one trial and a string in another")

    monkeypatch.setattr(_cli, "ingest_sweep", conflict)
    code, _, err = run_cli("ingest", sweep)
    assert code == 1 and "error: column 'x'" in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "summary", interrupted)
    code, _, err = run_cli("summary", sweep)
    assert code == 130 and "interrupted" in err


def test_cli_summary_and_sql(sweep):
    code, out, _ = run_cli("summary", sweep, "--format", "json")
    assert code == 0 and [r["stage"] for r in json.loads(out)] == ["smoke", "hisso"]  # run order
    code, out, _ = run_cli("query", sweep, "--sql", "SELECT count(*) AS n FROM trials",
                           "--format", "csv")
    assert code == 0 and out.splitlines() == ['"n"', "8"]


def test_module_entry_point_ingests_and_queries(tmp_path):
    path = standard_sweep(tmp_path)
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "sweeps.results", *map(str, a)], capture_output=True, text=True)
    done = run("ingest", path)
    assert done.returncode == 0 and "8 trials added" in done.stdout
    done = run("query", path, "--where", "status == 'HUNG'", "--columns", "trial_id",
               "--format", "csv")
    assert done.returncode == 0 and done.stdout.splitlines() == ['"trial_id"', '"bbbbb_00004"']
    done = run("query", path, "--where", "status == \"HUNG\"")
    assert done.returncode == 2 and "single quotes: 'HUNG'" in done.stderr


def _documented_filters() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    section = text.split("### Filters (`--where`)", 1)[1].split("\n- ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_every_filter_docs_results_md_shows_runs(sweep):
    filters = _documented_filters()
    assert len(filters) >= 4, "docs/results.md lost its filter examples"
    for where in filters:
        table = "events" if "timestamp" in where else "trials"
        query(sweep, table=table, where=where)  # raises on a filter the docs promise
