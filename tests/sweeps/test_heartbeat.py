"""Trial heartbeats on a real local Ray: what a trial writes reaches the stage's board, throttled;
the hang rule reads the board without blocking, and survives a board that is gone."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.tune.schedulers import TrialScheduler

from psann.runlog import EventLog
from sweeps.heartbeat import BoardReader, board_name, open_board, trial_heartbeat
from sweeps.storage import SweepStore
from sweeps.watchdog import HUNG_RECORD, HangGuard


def _wait_for(predicate, timeout_s=20.0, every_s=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"not true within {timeout_s} s")


def _board_entry(name, trial_id):
    return ray.get(ray.get_actor(name).trial.remote(trial_id), timeout=10)


def test_rows_and_log_lines_written_in_a_trial_reach_the_board_at_most_once_a_second(local_ray, tmp_path):
    name = board_name("sweep-a", "smoke")
    with open_board(name):
        log = EventLog(tmp_path / "events.csv")
        started = time.monotonic()
        with trial_heartbeat(name, "t1"):
            for epoch in range(1, 31):  # 30 rows over about 1.5 s
                log.write("epoch", phase="warm_start", epoch=epoch)
                time.sleep(0.05)
            logging.getLogger("psann.test").warning("a log line counts too")
        took = time.monotonic() - started
        log.close()
        entry = _wait_for(lambda: (e := _board_entry(name, "t1")) and e["rows"][-1]["epoch"] == "30" and e)
        # One beat at start, at most one per second while writing, one last at the end.
        assert 2 <= entry["beats"] <= took + 3
        assert [row["epoch"] for row in entry["rows"]] == ["28", "29", "30"]  # the autopsy rows, newest last
        assert all("train_loss" not in row for row in entry["rows"])  # empty cells are not sent

        # Log lines alone are signs of life.
        before = _board_entry(name, "t1")["beats"]
        with trial_heartbeat(name, "t1"):
            for _ in range(3):
                logging.getLogger("psann.test").warning("still warming up")
                time.sleep(1.2)
        _wait_for(lambda: _board_entry(name, "t1")["beats"] >= before + 3)


def test_reader_reports_which_trials_beat_without_blocking_and_pickles_as_its_name(local_ray):
    name = board_name("sweep-b", "smoke")
    with open_board(name):
        reader = BoardReader(name, interval_s=0.2)
        beat = threading.Event()
        stop = threading.Event()

        def trial():
            with trial_heartbeat(name, "beating", interval_s=0.2):
                while not stop.is_set():
                    if beat.is_set():
                        logging.getLogger("psann.test").warning("epoch")
                    time.sleep(0.05)

        thread = threading.Thread(target=trial)
        thread.start()
        try:
            assert _wait_for(lambda: reader.poll() == {"beating"})  # the beat at start
            started = time.monotonic()
            reader.poll()
            assert time.monotonic() - started < 0.05  # never waits for the board
            time.sleep(1.0)  # nothing written: no new beats
            reader.poll()
            time.sleep(0.5)
            assert reader.poll() == set()
            beat.set()
            assert _wait_for(lambda: "beating" in reader.poll())
            assert reader.confirmed_at is not None and reader.confirmed_at <= time.monotonic()
        finally:
            stop.set()
            thread.join()
        copy = pickle.loads(pickle.dumps(reader))
        assert copy.name == name and copy._handle is None and copy.confirmed_at is None
        assert _wait_for(lambda: copy.poll() == {"beating"})  # looked up again by name


def test_without_a_board_a_trial_runs_unwatched_and_the_reader_falls_back_quietly(local_ray, tmp_path, caplog):
    name = board_name("sweep-c", "gone")
    log = EventLog(tmp_path / "events.csv")
    with caplog.at_level(logging.WARNING, logger="sweeps.heartbeat"):
        with trial_heartbeat(name, "t1"):  # no such board: the block still runs
            log.write("epoch", epoch=1)
        reader = BoardReader(name, interval_s=0.1)
        for _ in range(5):
            assert reader.poll() == set()
        assert reader.confirmed_at is None and reader.last_rows("t1") is None
        with open_board(name):  # a board that disappears mid-stage
            reader = BoardReader(name, interval_s=0.1)
            _wait_for(lambda: (reader.poll(), reader.confirmed_at)[1] is not None)
        _wait_for(lambda: (reader.poll(), reader.confirmed_at is None)[1])
        assert reader.poll() == set()
    log.close()
    assert sum("no heartbeat board" in r.getMessage() for r in caplog.records) == 1
    assert sum("unavailable" in r.getMessage() for r in caplog.records) >= 1


# -- HangGuard against a stand-in controller (the real Tune controller: test_hang.py) ---------------------


@dataclass(eq=False)
class _Trial:
    trial_id: str
    status: str = "RUNNING"
    last_result: dict[str, Any] = field(default_factory=dict)


class _Controller:
    def __init__(self, trials):
        self.trials = trials
        self.stopped = []

    def get_live_trials(self):
        return [t for t in self.trials if t.status == "RUNNING"]

    def stop_trial(self, trial):
        trial.status = "TERMINATED"
        self.stopped.append((trial.trial_id, time.time()))


class _Idle(TrialScheduler):
    def choose_trial_to_run(self, tune_controller):
        return None


@ray.remote(num_cpus=0)
def _writing_trial(name, trial_id, events_csv, *, run_s, quiet_after_s=None):
    """A stand-in trial in its own worker process (listeners are per process, as in a Ray trial):
    an events row every 0.1 s inside trial_heartbeat for ``quiet_after_s`` (None: all along), then
    silence until ``run_s``. Returns the epochs written and the wall time of the last row."""
    log = EventLog(Path(events_csv))
    epochs, last_row_at = [], None
    # Beats every 0.3 s (production: 1 s) keep the timing margins of these short tests wide.
    with trial_heartbeat(name, trial_id, interval_s=0.3):
        started = time.monotonic()
        while time.monotonic() - started < run_s:
            if quiet_after_s is None or time.monotonic() - started < quiet_after_s:
                epochs.append(len(epochs) + 1)
                log.write("epoch", phase="warm_start", epoch=epochs[-1])
                last_row_at = time.time()
            time.sleep(0.1)
    log.close()
    return epochs, last_row_at


def _wait_until_beating(name, trial_ids):
    """Worker start-up is not silence (Tune starts a trial's clock once its actor runs)."""
    _wait_for(lambda: set(trial_ids) <= set(ray.get(ray.get_actor(name).counts.remote(), timeout=10)), timeout_s=60)


def test_guard_stops_the_trial_that_went_quiet_and_never_the_one_that_keeps_writing(local_ray, tmp_path):
    timeout_s = 3.0
    store = SweepStore(tmp_path / "sweep")
    name = board_name(store.name, "smoke")
    with open_board(name):
        guard = HangGuard(_Idle(), timeout_s, store=store, stage="smoke", board=name)
        chatty, quiet = _Trial("chatty"), _Trial("quiet")
        controller = _Controller([chatty, quiet])
        run_s = 5 * timeout_s
        tasks = [_writing_trial.remote(name, "chatty", str(tmp_path / "chatty.csv"), run_s=run_s),
                 _writing_trial.remote(name, "quiet", str(tmp_path / "quiet.csv"), run_s=run_s, quiet_after_s=2.0)]
        _wait_until_beating(name, ["chatty", "quiet"])
        started = time.monotonic()
        while time.monotonic() - started < 4 * timeout_s:  # no Tune results at all: beats only
            guard.choose_trial_to_run(controller)
            time.sleep(0.1)
        (chatty_epochs, _), (quiet_epochs, quiet_last_row_at) = ray.get(tasks, timeout=120)
    assert [trial_id for trial_id, _ in controller.stopped] == ["quiet"]
    assert chatty.status == "RUNNING" and len(chatty_epochs) > 40
    silent_when_stopped = controller.stopped[0][1] - quiet_last_row_at
    assert timeout_s <= silent_when_stopped <= timeout_s + 4
    record = HangGuard.load_record(store, "smoke")
    assert set(record) == {"quiet"} and record["quiet"]["silent_seconds"] > timeout_s
    # The autopsy comes from the board: the last rows the trial wrote before going quiet.
    lines = record["quiet"]["last_events"].splitlines()
    last = quiet_epochs[-1]
    assert [line.rsplit("epoch=", 1)[1] for line in lines] == [str(e) for e in (last - 2, last - 1, last)]
    assert all("event=epoch phase=warm_start" in line for line in lines)
    assert (tmp_path / "sweep" / "smoke" / HUNG_RECORD).is_file()


@pytest.mark.slow  # tens of seconds of Ray trials or of a watched run
def test_a_stalled_driver_does_not_take_its_own_delay_for_the_silence_of_a_writing_trial(local_ray, tmp_path):
    timeout_s = 2.0
    name = board_name("sweep-d", "smoke")
    with open_board(name):
        guard = HangGuard(_Idle(), timeout_s, board=name)
        trial = _Trial("t")
        controller = _Controller([trial])
        task = _writing_trial.remote(name, "t", str(tmp_path / "t.csv"), run_s=12.0)
        _wait_until_beating(name, ["t"])
        for _ in range(20):  # 2 s of normal steps
            guard.choose_trial_to_run(controller)
            time.sleep(0.1)
        time.sleep(2.5 * timeout_s)  # the driver stalls (a slow checkpoint, a busy machine)
        for _ in range(30):
            guard.choose_trial_to_run(controller)
            time.sleep(0.1)
        ray.get(task, timeout=120)
    assert controller.stopped == [] and trial.status == "RUNNING"


def test_guard_pickles_without_its_board_handle_and_finds_the_board_again_by_name(local_ray):
    name = board_name("sweep-e", "smoke")
    idle = _Controller([])
    with open_board(name):
        guard = HangGuard(_Idle(), 5.0, stage="smoke", board=name)
        _wait_for(lambda: (guard.choose_trial_to_run(idle), guard._reader.confirmed_at)[1])  # a live reader
        restored = pickle.loads(pickle.dumps(guard))  # what Tune does with the experiment state
        assert restored.board == name and restored._last_activity == {}
        assert restored._reader.confirmed_at is None  # no handle, no query in flight came along
        _wait_for(lambda: (restored.choose_trial_to_run(idle), restored._reader.confirmed_at)[1])
    legacy = HangGuard(_Idle(), 5.0)
    state = {k: v for k, v in legacy.__dict__.items() if k not in ("board", "_reader")}
    old = HangGuard.__new__(HangGuard)  # a scheduler pickled before boards existed
    old.__setstate__(state)
    assert old.board is None and old._reader is None


@pytest.fixture(autouse=True)
def _no_stray_heartbeat_threads():
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("heartbeat-") and t.is_alive()]
