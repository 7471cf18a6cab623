"""The hang rule on a real local Ray: a silent trial is stopped and recorded HUNG, the sweep goes on."""

from __future__ import annotations

import json

from _sweep_helpers import HANG_PENALTY, stage, stage_status, trial_dirs, write_sweep
from psann.contract import EVENT_COLUMNS, HUNG, SUCCESS
from psann.runlog import EventLog
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep
from sweeps.watchdog import AUTOPSY_ROWS, last_events

HANG_TIMEOUT_S = 10


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
