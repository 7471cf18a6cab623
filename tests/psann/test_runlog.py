"""Run-folder writers: events.csv rows, atomic JSON, per-run log handlers."""

import json
import logging

import pyarrow.csv as pacsv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann.contract import EVENT_COLUMNS
from psann.runlog import EventLog, RunLogging, json_safe, write_json_atomic


def _read_events(path):
    return pacsv.read_csv(path).to_pylist()


def test_event_log_message_with_commas_quotes_and_newlines_round_trips_through_pyarrow(tmp_path):
    path = tmp_path / "events.csv"
    message = 'shapes X=(480, 4), y=(480, 2); he said "stop", then\nmore'
    log = EventLog(path)
    log.write("warning", message=message)
    log.write("epoch", phase="hisso", epoch=1, train_loss=-0.5, val_loss=float("nan"), lr=0.003)
    log.close()

    table = pacsv.read_csv(path)
    assert table.column_names == list(EVENT_COLUMNS)
    rows = table.to_pylist()
    assert rows[0]["event"] == "warning"
    assert rows[0]["message"] == message
    assert rows[1]["epoch"] == 1
    assert rows[1]["train_loss"] == -0.5
    assert rows[1]["val_loss"] is None  # NaN is written as an empty (null) cell, not the text "nan"
    assert rows[1]["lr"] == 0.003


@settings(max_examples=40, deadline=None)
@given(message=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_event_log_any_message_round_trips_through_pyarrow(tmp_path_factory, message):
    path = tmp_path_factory.mktemp("events") / "events.csv"
    log = EventLog(path)
    log.write("warning", message=message)
    log.close()
    # The message column is read as text (a message like "1" must not turn into a number), and
    # only an empty field is null (docs/run_outputs.md), so a message "null" or "NA" stays text.
    options = pacsv.ConvertOptions(column_types={"message": "string"}, null_values=[""], strings_can_be_null=True)
    rows = pacsv.read_csv(path, convert_options=options).to_pylist()
    assert len(rows) == 1
    assert (rows[0]["message"] or "") == message


def test_event_log_reopened_appends_rows_without_a_second_header(tmp_path):
    path = tmp_path / "events.csv"
    first = EventLog(path)
    first.write("run_start", message="first")
    first.close()
    second = EventLog(path)
    second.write("run_end", message="second")
    second.close()

    rows = _read_events(path)
    assert [row["event"] for row in rows] == ["run_start", "run_end"]
    assert path.read_text().count("timestamp,") == 1


def test_event_log_timestamps_are_iso_utc_and_elapsed_is_non_decreasing(tmp_path):
    path = tmp_path / "events.csv"
    log = EventLog(path)
    for i in range(3):
        log.write("epoch", epoch=i + 1)
    log.close()
    rows = _read_events(path)
    assert all(str(row["timestamp"]).endswith("+00:00") for row in rows)
    elapsed = [row["elapsed_seconds"] for row in rows]
    assert elapsed == sorted(elapsed)


def test_write_json_atomic_turns_nan_and_inf_into_null_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"a": float("nan"), "b": {"c": float("inf")}, "d": 1.5})
    assert json.loads(path.read_text()) == {"a": None, "b": {"c": None}, "d": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_safe_turns_numpy_scalars_and_tuples_into_plain_json_values():
    import numpy as np

    value = json_safe({"n": np.float32(1.5), "i": np.int64(3), "t": (1, np.float64("nan")), 2: "key"})
    assert value == {"n": 1.5, "i": 3, "t": [1, None], "2": "key"}
    assert type(value["n"]) is float and type(value["i"]) is int
    assert json.loads(json.dumps(value)) == value


def test_write_json_atomic_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"status": "running"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": object()})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_run_logging_removes_its_handlers_and_restores_the_level(tmp_path):
    logger = logging.getLogger("psann")
    handlers_before, level_before = list(logger.handlers), logger.level
    root_before = list(logging.getLogger().handlers)
    with RunLogging(tmp_path / "run.log", console=True, verbose=False):
        logging.getLogger("psann.some.module").debug("debug line %d", 1)
        assert len(logger.handlers) == len(handlers_before) + 2
    assert logger.handlers == handlers_before
    assert logger.level == level_before
    assert logging.getLogger().handlers == root_before
    text = (tmp_path / "run.log").read_text()
    assert "DEBUG psann.some.module: debug line 1" in text
