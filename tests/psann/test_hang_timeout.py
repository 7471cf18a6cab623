"""The hang rule of one run: every events row or log line is a sign of life; --hang-timeout ends a
run that writes nothing with status hung and exit 124 (the real CLI, in a subprocess)."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import yaml

from psann.contract import EVENT_COLUMNS, EXIT_BAD_INPUT, EXIT_HUNG, EXIT_OK, METRICS_KEYS, RUN_HUNG
from psann.runlog import EventLog, watch_events
from psann.scripts.hisso_log_run import main
from psann.watchdog import AUTOPSY_ROWS, RunWatchdog

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

# A tiny HISSO run on the built-in toy market: epochs take a fraction of a second.
RUN = {
    "estimator": {"target": "psann.PSANNRegressor",
                  "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 3, "w0": 1.0, "device": "cpu"}},
    "hisso": {"window": 16, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio"},
    "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 300, "features": 4, "seed": 0}},
    "training": {"verbose": 1},
}


def _config(tmp_path, *, reward="portfolio", epochs=3):
    raw = json.loads(json.dumps(RUN))
    raw["hisso"]["reward"] = reward
    raw["estimator"]["params"]["epochs"] = epochs
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "psann.scripts.hisso_log_run", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _watchdog_threads():
    return [t for t in threading.enumerate() if t.name == "psann-hang-watchdog"]


# -- the signal: psann.runlog.watch_events ----------------------------------------------------------------

def test_a_watcher_sees_every_events_row_as_written_and_psann_log_lines_and_nothing_after_it_leaves(tmp_path):
    seen = []
    log = EventLog(tmp_path / "events.csv")
    with watch_events(lambda event, row: seen.append((event, dict(row)))):
        log.write("epoch", phase="warm_start", epoch=1, train_loss=0.5)
        logging.getLogger("psann.test").warning("warm start is slow")
        logging.getLogger("elsewhere").warning("not a psann line")
    log.write("epoch", phase="warm_start", epoch=2)
    log.close()
    assert [event for event, _ in seen] == ["epoch", "log"]
    row = seen[0][1]
    assert list(row) == list(EVENT_COLUMNS)  # the row exactly as events.csv has it
    assert (row["phase"], row["epoch"], row["train_loss"]) == ("warm_start", "1", "0.5")
    written = pacsv.read_csv(tmp_path / "events.csv").to_pylist()[0]
    assert row["timestamp"] == written["timestamp"].isoformat()
    assert seen[1][1]["message"] == "WARNING psann.test: warm start is slow"


def test_a_watcher_that_raises_is_logged_once_and_never_breaks_the_run_writing(tmp_path, caplog):
    calls = []

    def broken(event, row):
        calls.append(event)
        raise RuntimeError("watcher bug")

    log = EventLog(tmp_path / "events.csv")
    with caplog.at_level(logging.WARNING, logger="psann.runlog"), watch_events(broken, log_records=False):
        for epoch in (1, 2, 3):
            log.write("epoch", epoch=epoch)
    log.close()
    assert calls == ["epoch"] * 3
    assert [r["epoch"] for r in pacsv.read_csv(tmp_path / "events.csv").to_pylist()] == [1, 2, 3]
    failures = [r for r in caplog.records if "failed (ignored)" in r.getMessage()]
    assert len(failures) == 1 and "watcher bug" in failures[0].exc_text


# -- RunWatchdog in process (the exit is recorded instead of ending pytest) -------------------------------

def test_watchdog_keeps_a_run_that_writes_and_records_one_that_goes_quiet_as_hung(tmp_path):
    exits = []
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({**dict.fromkeys(METRICS_KEYS), "run_name": "r",
                                                      "status": "running", "epochs_run": 7, "best_epoch": 5}))
    log = EventLog(run_dir / "events.csv")
    timeout_s = 2.0
    with RunWatchdog(run_dir, timeout_s, flag="--hang-timeout", exit_process=exits.append) as watchdog:
        started = time.monotonic()
        epoch = 0
        while time.monotonic() - started < 2.5 * timeout_s:  # writes for longer than the timeout
            epoch += 1
            log.write("epoch", phase="warm_start", epoch=epoch)
            quiet_from = time.monotonic()
            time.sleep(0.1)
        assert exits == []
        deadline = quiet_from + 10 * timeout_s
        while not exits and time.monotonic() < deadline:  # now nothing is written
            time.sleep(0.05)
        quiet_for = time.monotonic() - quiet_from
    log.close()
    assert exits == [EXIT_HUNG]
    assert timeout_s <= quiet_for < timeout_s + 3
    assert watchdog.hung_after_s > timeout_s
    assert _watchdog_threads() == []

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(METRICS_KEYS)
    assert metrics["status"] == RUN_HUNG
    assert (metrics["epochs_run"], metrics["best_epoch"]) == (7, 5)  # the last snapshot's figures stay
    assert "--hang-timeout 2" in metrics["error"] and "nothing written for" in metrics["error"]
    last_rows = metrics["error"].split("Last events:\n", 1)[1].splitlines()
    assert len(last_rows) == AUTOPSY_ROWS
    assert [line.split("epoch=")[-1] for line in last_rows] == [str(e) for e in (epoch - 2, epoch - 1, epoch)]
    rows = pacsv.read_csv(run_dir / "events.csv").to_pylist()
    assert rows[-1]["event"] == "error" and rows[-1]["message"].startswith("hung: nothing written for")
    assert "ERROR psann.watchdog: nothing written for" in (run_dir / "run.log").read_text()


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf")])
def test_watchdog_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(tmp_path, value):
    with pytest.raises(ValueError, match="--hang-timeout: expected seconds > 0"):
        RunWatchdog(tmp_path, value, flag="--hang-timeout")


# -- the CLI ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_hang_timeout_that_is_not_positive_exits_2_naming_the_flag_before_any_run_folder(tmp_path, capsys, value):
    code = main(["--config", str(_config(tmp_path)), "--output-dir", str(tmp_path / "runs"), f"--hang-timeout={value}"])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --hang-timeout: expected seconds > 0") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_normal_run_with_hang_timeout_exits_0_and_leaves_no_watchdog_behind(tmp_path, capsys):
    code = main(["--config", str(_config(tmp_path)), "--output-dir", str(tmp_path / "runs"), "--run-name", "r",
                 "--hang-timeout", "120"])
    assert code == EXIT_OK
    assert json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())["status"] == "success"
    assert _watchdog_threads() == []


@pytest.mark.slow  # tens of seconds of Ray trials or of a watched run
def test_a_run_that_keeps_writing_for_longer_than_the_hang_timeout_finishes_with_exit_0(tmp_path):
    # Each reward call sleeps 0.1 s: about 0.4 s between epoch rows, 12 epochs, several timeouts long.
    config = _config(tmp_path, reward="tests.psann._hang_faults:slow_reward", epochs=12)
    started = time.monotonic()
    proc = _cli("--config", config, "--output-dir", tmp_path / "runs", "--run-name", "r", "--hang-timeout", "3")
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"success: {tmp_path / 'runs' / 'r'}"
    rows = pacsv.read_csv(tmp_path / "runs" / "r" / "events.csv").to_pylist()
    run_seconds = rows[-1]["elapsed_seconds"]
    assert run_seconds > 3, f"the run took {run_seconds} s, not longer than the timeout (elapsed {time.monotonic() - started:.0f} s)"
    assert rows[-1]["event"] == "run_end"


def test_a_run_that_writes_nothing_for_the_hang_timeout_ends_hung_with_exit_124_and_its_files(tmp_path):
    config = _config(tmp_path, reward="tests.psann._hang_faults:hanging_reward", epochs=50)
    run_dir = tmp_path / "runs" / "r"
    proc = _cli("--config", config, "--output-dir", tmp_path / "runs", "--run-name", "r", "--hang-timeout", "4",
                timeout=180)
    assert proc.returncode == EXIT_HUNG, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"hung: {run_dir}"
    assert "error: nothing written for" in proc.stderr and "(--hang-timeout 4)" in proc.stderr

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(METRICS_KEYS)
    assert metrics["status"] == RUN_HUNG
    assert metrics["epochs_run"] == 1  # the reward hangs in epoch 2; epoch 1's snapshot stays
    silent = float(metrics["error"].split("nothing written for ", 1)[1].split(" s", 1)[0])
    assert 4 < silent < 10
    assert "Last events:" in metrics["error"] and "event=epoch phase=hisso epoch=1" in metrics["error"]
    rows = pacsv.read_csv(run_dir / "events.csv").to_pylist()
    assert [r["event"] for r in rows][-2:] == ["epoch", "error"]
    assert rows[-1]["message"].startswith("hung: nothing written for")
    assert "ERROR psann.watchdog" in (run_dir / "run.log").read_text()
    assert (run_dir / "checkpoints" / "best" / "weights.pt").is_file()  # what was saved stays
