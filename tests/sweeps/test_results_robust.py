"""Ingest never loses the sweep for one bad trial; one ingest of a sweep at a time; error_kind.

Every malformed value becomes a null plus a note in the trial's ingest_notes; a file that cannot
be read at all makes the trial INCOMPLETE; nothing is left behind that needs cleaning by hand.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from psann import contract as C
from sweeps.results import ingest_sweep, load_events, load_trials
from sweeps.results import _schema as S
from sweeps.results._lock import LOCK_FILE, IngestLockedError, ingest_lock

try:
    from ._trial_folders import TrialSpec, standard_sweep, tune_dir_name, write_stage, write_trial
except ImportError:
    from _trial_folders import TrialSpec, standard_sweep, tune_dir_name, write_stage, write_trial


def one_trial_sweep(tmp_path: Path, **spec_kwargs) -> tuple[Path, Path]:
    """A sweep with a good trial and one more (returned) to be spoiled by the test."""
    sweep = tmp_path / "sw"
    good = TrialSpec("aaaaa_00000", outcome="SUCCESS")
    bad = TrialSpec("aaaaa_00001", outcome="SUCCESS", **spec_kwargs)
    folders = write_stage(sweep / "hisso", [good, bad])
    return sweep, folders[1]


def rows(sweep: Path) -> dict[str, dict]:
    return {r["trial_id"]: r for r in load_trials(sweep).to_pylist()}


def edit_metrics(folder: Path, **changes) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(changes)
    (folder / "metrics.json").write_text(json.dumps(metrics))


# -- malformed values -------------------------------------------------------------------------------

def test_integer_beyond_int64_is_null_with_a_note(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path, extra_metrics={"steps_total": 5})
    edit_metrics(folder, seed=2**70, steps_total=-(2**64), epochs_run=2**63)
    (folder / "params.json").write_text(json.dumps({"estimator.params.lr": 1e-3, "batch": 10**30}))
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["seed"] is None and row["epochs_run"] is None
    assert "steps_total" not in row  # an extra column exists only when some trial has a value
    assert row["status"] == "SUCCESS" and row["params_estimator__params__lr"] == 1e-3
    notes = row["ingest_notes"]
    assert "metrics.json seed: integer 1180591620717411303424 is beyond int64" in notes
    assert "metrics.json epochs_run: integer 9223372036854775808 is beyond int64" in notes
    assert "steps_total: integer -18446744073709551616 is beyond int64; null" in notes
    assert "params_batch: integer 1000000000...(31 digits) is beyond int64; null" in notes
    assert rows(sweep)["aaaaa_00000"]["ingest_notes"] is None


def test_deeply_nested_json_is_null_with_a_note_and_too_deep_to_parse_is_incomplete(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path)
    deep: object = 1.0
    for _ in range(200):
        deep = {"x": deep}
    edit_metrics(folder, gpu=deep, val_loss=0.25)
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["status"] == "SUCCESS" and row["val_loss"] == 0.25
    assert f"nested deeper than {S.MAX_JSON_DEPTH} levels; null" in row["ingest_notes"]
    assert "metrics.json gpu.x.x" in row["ingest_notes"]

    (folder / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["status"] == "INCOMPLETE" and "metrics.json is nested too deeply to read" in row["error"]
    assert rows(sweep)["aaaaa_00000"]["status"] == "SUCCESS"


@pytest.mark.parametrize("text", ['{"status": "succ', "", '{"status": "success", "val_loss": 0.', "\x00\x00"])
def test_truncated_metrics_json_makes_only_that_trial_incomplete(tmp_path, text):
    sweep, folder = one_trial_sweep(tmp_path)
    (folder / "metrics.json").write_text(text)
    ingest_sweep(sweep)
    got = rows(sweep)
    assert got["aaaaa_00001"]["status"] == "INCOMPLETE" and "metrics.json" in got["aaaaa_00001"]["error"]
    assert got["aaaaa_00000"]["status"] == "SUCCESS"


def test_nan_strings_in_number_fields_are_null_with_a_note(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path)
    edit_metrics(folder, val_loss="NaN", best_epoch=float("nan"), train_loss=float("nan"))
    events = (folder / "events.csv").read_text().splitlines()
    events[5] = events[5].replace(",hisso,2,", ",hisso,NaN,")
    (folder / "events.csv").write_text("\n".join(events) + "\n")
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["val_loss"] is None and row["best_epoch"] is None
    assert row["train_loss"] != row["train_loss"]  # a JSON NaN number stays a NaN double
    notes = row["ingest_notes"]
    assert "metrics.json val_loss: expected double, got str 'NaN'" in notes
    assert "metrics.json best_epoch: expected int64, got float nan" in notes
    assert "events.csv column 'epoch': row 5 not int64 ('NaN'); null" in notes
    assert row["events_count"] == len(events) - 1


def test_nan_string_in_an_extra_metric_is_null_and_does_not_conflict_with_other_trials(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path, extra_metrics={"calmar": "NaN"})
    write_trial(sweep / "hisso" / tune_dir_name(TrialSpec("aaaaa_00002"), 2),
                TrialSpec("aaaaa_00002", extra_metrics={"calmar": 1.5}))
    ingest_sweep(sweep)
    got = rows(sweep)
    assert load_trials(sweep).schema.field("calmar").type == pa.float64()
    assert got["aaaaa_00002"]["calmar"] == 1.5 and got["aaaaa_00001"]["calmar"] is None
    assert "metrics.json calmar: 'NaN' is text, not a number; null" in got["aaaaa_00001"]["ingest_notes"]


def test_bad_utf8_in_events_csv_is_null_with_a_note_and_the_rows_kept(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path)
    data = (folder / "events.csv").read_bytes().replace(b"done", b"d\xffne\xc3")
    (folder / "events.csv").write_bytes(data)
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["status"] == "SUCCESS" and row["events_count"] == data.count(b"\n") - 1
    assert "events.csv column 'message': row" in row["ingest_notes"] and "not UTF-8; null" in row["ingest_notes"]
    events = load_events(sweep).filter(pa.compute.equal(load_events(sweep)["trial_id"], "aaaaa_00001"))
    assert events["message"].to_pylist()[-1] is None and events["event"].to_pylist()[-1] == "run_end"


def test_lone_surrogate_text_is_null_with_a_note(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path)
    (folder / "metrics.json").write_text((folder / "metrics.json").read_text().replace(
        '"run_name": "aaaaa_00001"', '"run_name": "bad \\ud800", "note\\udfff": 1'))
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["run_name"] is None and row["status"] == "SUCCESS"
    assert "run_name: text 'bad \\ud800' is not valid UTF-8; null" in row["ingest_notes"]
    assert "is not valid UTF-8; left out" in row["ingest_notes"]


@pytest.mark.parametrize(
    ("status", "warning"),
    [({"trials": {"a": 1}}, "'trials' is not a list"),
     ({"trials": [7, {"trial_dir": 5, "outcome": "ERROR"}, {"trial_id": ["x"]}], "max_epochs": "8"},
      "trials[0] is not an object"),
     ({"trials": [{"trial_id": "aaaaa_00001", "outcome": ["ERROR"], "iterations": True,
                   "tune_status": {"x": 1}, "repeat": 2**80, "val_loss_smoothed": "low",
                   "error_kind": 3}], "max_epochs": 2**70, "status": ["DONE"]}, None)],
)
def test_wrong_types_in_stage_status_json_never_fail_the_ingest(tmp_path, status, warning):
    sweep, _ = one_trial_sweep(tmp_path)
    (sweep / "hisso" / "stage_status.json").write_text(json.dumps(status))
    report = ingest_sweep(sweep)
    got = rows(sweep)
    assert set(got) == {"aaaaa_00000", "aaaaa_00001"}
    if warning is not None:
        assert any(warning in w for w in report.warnings)
    else:
        row = got["aaaaa_00001"]
        assert row["outcome"] is None and row["iterations"] is None and row["max_epochs"] is None
        assert row["repeat"] is None and row["error_kind"] is None and row["stage_status"] == "['DONE']"
        for fragment in ("outcome ['ERROR'] is not one of", "iterations: expected an int, got True",
                         "repeat: integer", "stage_status.json error_kind: expected one of"):
            assert fragment in row["ingest_notes"]


def test_an_unforeseen_error_reading_one_trial_keeps_the_others(tmp_path, monkeypatch):
    from sweeps.results import _ingest

    sweep, folder = one_trial_sweep(tmp_path)
    real = _ingest.read_trial

    def flaky(fs, sweep_name, src, settings):
        if src.dir_name == folder.name:
            raise RuntimeError("disk on fire")
        return real(fs, sweep_name, src, settings)

    monkeypatch.setattr(_ingest, "read_trial", flaky)
    ingest_sweep(sweep)
    got = rows(sweep)
    assert got["aaaaa_00000"]["status"] == "SUCCESS"
    assert got["aaaaa_00001"]["status"] == "INCOMPLETE"
    assert "ingest could not read this trial (RuntimeError: disk on fire)" in got["aaaaa_00001"]["error"]


# -- error_kind ---------------------------------------------------------------------------------------

def test_error_kind_comes_from_the_runner_else_metrics_json_and_is_null_on_success(tmp_path):
    sweep = standard_sweep(tmp_path)
    folder = next((sweep / "smoke").glob("*aaaaa_00002*"))
    edit_metrics(folder, error_kind="cosmic_ray")
    ingest_sweep(sweep)
    got = rows(sweep)
    assert load_trials(sweep).schema.field("error_kind").type == pa.string()
    assert got["bbbbb_00003"]["error_kind"] == "exception" and got["bbbbb_00004"]["error_kind"] == "hung"
    assert got["bbbbb_00000"]["error_kind"] is None and got["bbbbb_00002"]["error_kind"] is None
    assert got["aaaaa_00002"]["error_kind"] is None
    assert "metrics.json error_kind: expected one of exception, non_finite" in got["aaaaa_00002"]["ingest_notes"]


def test_error_kind_of_a_trial_whose_metrics_json_predates_it_is_null(tmp_path):
    sweep, folder = one_trial_sweep(tmp_path)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("error_kind", None)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    ingest_sweep(sweep)
    row = rows(sweep)["aaaaa_00001"]
    assert row["error_kind"] is None and row["ingest_notes"] is None


def test_error_kind_values_are_the_contracts():
    assert S.ERROR_KINDS == tuple(getattr(C, "ERROR_KINDS", ()))


# -- re-ingest ----------------------------------------------------------------------------------------

def test_tables_of_an_older_format_re_ingest_without_loss(tmp_path, monkeypatch):
    sweep = standard_sweep(tmp_path)
    monkeypatch.setattr(S, "FORMAT_VERSION", "3")
    first = ingest_sweep(sweep)
    before = load_trials(sweep), load_events(sweep)
    monkeypatch.undo()
    again = ingest_sweep(sweep)  # a new format version: every trial is read again
    assert first.trials_added == again.trials_updated == 8
    after = load_trials(sweep), load_events(sweep)
    assert after[0].drop_columns(["source_fingerprint"]).equals(before[0].drop_columns(["source_fingerprint"]))
    assert after[1].equals(before[1])
    assert ingest_sweep(sweep).trials_unchanged == 8  # and then it is stable


# -- the ingest lock ---------------------------------------------------------------------------------

def _hold_lock(tables: str, ready, release) -> None:
    with ingest_lock(tables, timeout_s=0):
        ready.set()
        release.wait(30)


def test_a_second_ingest_waits_for_the_lock_then_times_out_with_a_clear_message(tmp_path):
    sweep, _ = one_trial_sweep(tmp_path)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(sweep / "tables"), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        with pytest.raises(IngestLockedError) as info:
            ingest_sweep(sweep, lock_timeout_s=0.3)
        assert time.monotonic() - started >= 0.3
        assert f"process {holder.pid}" in str(info.value) and LOCK_FILE in str(info.value)
        assert "--lock-timeout" in str(info.value)
    finally:
        release.set()
        holder.join(10)
    assert ingest_sweep(sweep, lock_timeout_s=0).trials_added == 2


def test_a_second_ingest_waits_for_the_first_and_then_runs(tmp_path):
    import threading

    sweep, _ = one_trial_sweep(tmp_path)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(sweep / "tables"), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        threading.Timer(0.3, release.set).start()
        started = time.monotonic()
        assert ingest_sweep(sweep, lock_timeout_s=10).trials_added == 2
        assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        holder.join(10)


def test_a_killed_ingest_leaves_no_lock_that_blocks_the_next(tmp_path):
    sweep, _ = one_trial_sweep(tmp_path)
    code = ("import sys, time; from sweeps.results._lock import ingest_lock\n"
            "with ingest_lock(sys.argv[1], 0):\n    print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(sweep / "tables")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(IngestLockedError):
            ingest_sweep(sweep, lock_timeout_s=0)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert (sweep / "tables" / LOCK_FILE).exists()  # the file stays; the kernel dropped the lock
    assert ingest_sweep(sweep, lock_timeout_s=0).trials_added == 2


def test_cli_ingest_locked_exits_1_with_the_message(tmp_path, capsys):
    from sweeps.results._cli import main

    sweep, _ = one_trial_sweep(tmp_path)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(sweep / "tables"), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        assert main(["ingest", str(sweep), "--lock-timeout", "0"]) == 1
    finally:
        release.set()
        holder.join(10)
    assert "error: another ingest of this sweep" in capsys.readouterr().err


def test_a_failed_partition_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    from sweeps.results import _store

    sweep, _ = one_trial_sweep(tmp_path)

    def broken(*args, **kwargs):
        Path(args[1]).mkdir(parents=True)
        (Path(args[1]) / "part-0.parquet").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(_store.ds, "write_dataset", broken)
    with pytest.raises(OSError, match="disk full"):
        ingest_sweep(sweep)
    leftovers = [p.name for p in (sweep / "tables").rglob("*") if p.name.startswith(".stage=")]
    assert leftovers == []
    monkeypatch.undo()
    assert ingest_sweep(sweep).trials_added == 2
