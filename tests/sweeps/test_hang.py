"""The hang rule on a real local Ray: a silent trial is stopped and recorded HUNG, the sweep goes on;
a trial that keeps writing events rows without a Tune report is not stopped."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ray import tune

from _sweep_helpers import HANG_PENALTY, stage, stage_status, trial_dirs, write_sweep
from psann.contract import EVENT_COLUMNS, HUNG, SUCCESS
from psann.runlog import EventLog
from sweeps.heartbeat import board_name, open_board, trial_heartbeat
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep
from sweeps.storage import SweepStore
from sweeps.watchdog import AUTOPSY_ROWS, HangGuard, last_events

# A real run's first fit in a fresh worker is silent for seconds (torch imports its compiler
# stack), so the sweep test keeps a timeout well above that.
HANG_TIMEOUT_S = 10
QUICK_TIMEOUT_S = 5  # the warm-start test's trials write rows without a fit
WARM_START_S = 12  # how long the logging trial goes without a Tune report: over twice the timeout


def test_silent_trial_is_stopped_as_hung_while_the_others_finish(local_ray, tmp_path):
    path = write_sweep(
        tmp_path,
        [
            # Every smoke trial uses a reward that never returns for the trial with the large
            # transition penalty; the stage passes with 2 of 3 trials.
            stage("smoke", epochs=4, max_concurrent_trials=2, pass_rule={"min_success_fraction": 0.6},
                  overrides={"hisso.reward": "_sweep_helpers:hanging_reward"}),
            stage("after", epochs=1, max_concurrent_trials=2),
        ],
        search_space={"hisso.transition_penalty": {"grid": [0.0, 0.001, HANG_PENALTY]}},
        hang_timeout_s=HANG_TIMEOUT_S,
    )
    sweep_dir = tmp_path / "out" / "hang"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    smoke = stage_status(sweep_dir, "smoke")
    by_penalty = {t["params"]["hisso.transition_penalty"]: t for t in smoke["trials"]}
    hung = by_penalty[HANG_PENALTY]
    assert hung["outcome"] == HUNG
    assert hung["tune_status"] == "TERMINATED"  # stopped by the sweep, not crashed
    assert hung["iterations"] is not None and hung["iterations"] < 4
    # The autopsy: the last rows of its events.csv, ending at the last epoch it reported.
    assert f"epoch={hung['iterations']}" in hung["hung_last_events"]
    assert "event=epoch" in hung["hung_last_events"]
    record = json.loads((sweep_dir / "smoke" / "hung_trials.json").read_text())
    assert set(record) == {hung["trial_id"]}
    assert record[hung["trial_id"]]["silent_seconds"] >= HANG_TIMEOUT_S  # rounded to 0.1 s
    for penalty in (0.0, 0.001):
        assert by_penalty[penalty]["outcome"] == SUCCESS and by_penalty[penalty]["iterations"] == 4
    assert smoke["passed"] is True
    assert results[0].count(HUNG) == 1

    # The sweep went on: the next stage ran all its trials (none of them hang: plain reward).
    assert [r.stage for r in results] == ["smoke", "after"]
    after = stage_status(sweep_dir, "after")
    assert [t["outcome"] for t in after["trials"]] == [SUCCESS] * 3
    assert len(trial_dirs(sweep_dir, "after")) == 3


def test_autopsy_is_the_last_rows_of_a_real_events_csv_one_line_each_without_empty_fields(tmp_path):
    log = EventLog(tmp_path / "events.csv")
    log.write("run_start", message="run r")
    for epoch in range(1, 5):
        log.write("epoch", phase="hisso", epoch=epoch, val_loss=-0.1 * epoch)
    log.close()
    text = (tmp_path / "events.csv").read_text()
    assert text.splitlines()[0] == ",".join(EVENT_COLUMNS)
    lines = last_events(text).splitlines()
    assert len(lines) == AUTOPSY_ROWS == 3
    assert [line.split("epoch=")[-1].split()[0] for line in lines] == ["2", "3", "4"]
    assert all("event=epoch" in line and "train_loss=" not in line for line in lines)
    assert last_events(None) == "(no events.csv yet)"


def _warm_start_trial(config, *, board):
    """Writes warm-start epoch rows every 0.3 s for WARM_START_S without a Tune report ("logs"),
    or writes two rows and then nothing ("quiet"); reports once at the end."""
    with trial_heartbeat(board):  # the trial id is Tune's own
        events = EventLog(Path.cwd() / "events.csv")
        events.write("run_start", message=config["mode"])
        epochs = 0
        started = time.monotonic()
        if config["mode"] == "quiet":
            events.write("warning", message="going quiet")
            time.sleep(20 * QUICK_TIMEOUT_S)  # stopped by the hang rule long before
        else:
            while time.monotonic() - started < WARM_START_S:
                epochs += 1
                events.write("epoch", phase="warm_start", epoch=epochs)
                time.sleep(0.3)
        events.close()
        tune.report({"val_loss": 0.0, "warm_start_epochs": epochs, "silent_to_tune_s": time.monotonic() - started})


@pytest.mark.slow  # tens of seconds of Ray trials or of a watched run
def test_a_trial_logging_warm_start_epochs_past_the_timeout_is_not_hung_one_that_writes_nothing_is(
        local_ray, tmp_path):
    store = SweepStore(tmp_path / "sweep")
    board = board_name(store.name, "warm")
    with open_board(board):
        guard = HangGuard(None, QUICK_TIMEOUT_S, store=store, stage="warm", board=board)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_warm_start_trial, board=board), {"cpu": 1}),
            param_space={"mode": tune.grid_search(["logs", "quiet"])},
            tune_config=tune.TuneConfig(scheduler=guard, max_concurrent_trials=2),
            run_config=tune.RunConfig(name="warm", storage_path=store.uri, verbose=0),
        )
        results = {r.config["mode"]: r for r in tuner.fit()}

    logs = results["logs"]
    assert logs.error is None
    assert logs.metrics["silent_to_tune_s"] >= WARM_START_S > 2 * QUICK_TIMEOUT_S
    assert logs.metrics["warm_start_epochs"] >= 10
    record = HangGuard.load_record(store, "warm")
    assert logs.metrics["trial_id"] not in record
    assert len(record) == 1  # the quiet one, stopped (it never reported, so it has no result)
    (hung,) = record.values()
    assert QUICK_TIMEOUT_S < hung["silent_seconds"] < QUICK_TIMEOUT_S + 10
    # Its autopsy comes from the board: without a report its events.csv never reached the sweep folder.
    assert hung["last_events"].splitlines()[-1].endswith("event=warning message=going quiet")
    assert results["quiet"].error is None and "val_loss" not in (results["quiet"].metrics or {})
