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
    with pytest.raises(ValueError, match="stage 'hiso' is not in the tables; stages: hisso, smoke"):
        query(sweep, stage="hiso")


def test_query_on_events_table(sweep):
    table = query(sweep, table="events", where="event == 'epoch' and phase == 'warm_start'",
                  columns=["trial_id", "epoch", "val_loss"])
    assert table["trial_id"].to_pylist() == ["bbbbb_00000", "bbbbb_00000"]
    assert table["epoch"].to_pylist() == [1, 2]


def test_loaded_tables_put_stage_right_after_sweep(sweep):
    assert load_trials(sweep).column_names[:3] == ["sweep", "stage", "trial_id"]
    assert load_events(sweep).column_names[:3] == ["sweep", "stage", "trial_id"]


@pytest.mark.parametrize(
    "kwargs",
    [dict(columns=["trial_id", "val_los"]), dict(sort="val_los"), dict(where="val_los < 1")],
)
def test_unknown_column_names_it_and_lists_the_known_ones(sweep, kwargs):
    with pytest.raises(ValueError) as info:
        query(sweep, **kwargs)
    message = str(info.value)
    assert "unknown column 'val_los'" in message and "Did you mean 'val_loss'" in message
    assert "Known columns: sweep, trial_id" in message and "params_hisso__window" in message


@pytest.mark.parametrize(
    ("where", "fragment"),
    [("val_loss <", "expected a column name or a value"),
     ("status == 1", "holds string values"),
     ("val_loss < 1 and", "position 16"),
     ("__import__('os')", "expected 'and', 'or' or the end"),
     ("val_loss = = 1", "expected a column name or a value")],
)
def test_bad_filter_expression_is_a_clear_error(sweep, where, fragment):
    with pytest.raises(WhereError, match="bad filter expression") as info:
        query(sweep, where=where)
    assert fragment in str(info.value)


def test_timestamp_columns_compare_with_iso_strings(sweep):
    table = query(sweep, table="events", where="timestamp >= '2026-11-23 18:00:13'")
    assert table.num_rows > 0
    assert all(t.isoformat() >= "2026-11-23T18:00:13" for t in table["timestamp"].to_pylist())


def test_path_without_tables_says_to_ingest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results tables under .*ingest"):
        query(tmp_path)


def test_top_must_be_positive(sweep):
    with pytest.raises(ValueError, match="top must be an int >= 1, got 0"):
        query(sweep, top=0)


def test_summary_counts_statuses_and_names_the_best_trial(sweep):
    rows = {r["stage"]: r for r in summary(sweep).to_pylist()}
    trials = load_trials(sweep).to_pylist()
    hisso = rows["hisso"]
    assert (hisso["trials"], hisso["SUCCESS"], hisso["PRUNED"], hisso["ERROR"], hisso["HUNG"]) == (
        5, 2, 1, 1, 1)
    assert hisso["INCOMPLETE"] == hisso["RUNNING"] == hisso["INTERRUPTED"] == 0
    best = min((r for r in trials if r["stage"] == "hisso" and r["status"] == "SUCCESS"),
               key=lambda r: r["val_loss"])
    assert (hisso["best_trial_id"], hisso["best_val_loss"]) == (best["trial_id"], best["val_loss"])
    assert rows["smoke"]["SUCCESS"] == 3


def test_sql_exposes_trials_and_events(sweep):
    pytest.importorskip("duckdb")
    table = sql(sweep, "SELECT t.stage, count(*) AS epochs FROM events e JOIN trials t "
                       "USING (stage, trial_id) WHERE e.event = 'epoch' AND t.status = 'SUCCESS' "
                       "GROUP BY t.stage ORDER BY t.stage")
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"stage": "hisso", "epochs": 2 + 8 + 8},
                                 {"stage": "smoke", "epochs": 6}]


def test_sql_error_is_a_value_error(sweep):
    pytest.importorskip("duckdb")
    with pytest.raises(ValueError, match="SQL statement failed"):
        sql(sweep, "SELECT nope FROM trials")


def test_sql_without_duckdb_says_how_to_install_it(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ImportError, match=r"psann-sweeps\[sql\]"):
        sql(sweep, "SELECT 1")
    code, _, err = run_cli("query", sweep, "--sql", "SELECT 1")
    assert code == 1 and "pip install 'psann-sweeps[sql]'" in err


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


def test_cli_errors_go_to_stderr_with_exit_code_1(sweep, tmp_path):
    code, out, err = run_cli("query", sweep, "--where", "val_loss <<")
    assert code == 1 and out == "" and "bad filter expression" in err
    code, _, err = run_cli("query", tmp_path)
    assert code == 1 and "no results tables" in err
    code, _, err = run_cli("query", sweep, "--sql", "SELECT 1", "--top", "3")
    assert code == 2 and "--sql replaces the other query flags" in err


def test_cli_summary_and_sql(sweep):
    code, out, _ = run_cli("summary", sweep, "--format", "json")
    assert code == 0 and [r["stage"] for r in json.loads(out)] == ["smoke", "hisso"]  # run order
    pytest.importorskip("duckdb")
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
