"""Trial heartbeats: the signs of life of a trial that the driver can see between Tune reports.

A trial writes into Tune's working directory, which reaches the sweep folder only at a report or a
checkpoint, so the driver cannot watch a trial's events.csv. Instead every events.csv row and
``psann`` log line of a trial (``psann.runlog.watch_events``) touches a small named Ray actor, the
stage's heartbeat board, and the hang rule (``sweeps.watchdog.HangGuard``) reads the board. A long
warm start that keeps logging is therefore never stopped as HUNG, while a trial that writes nothing
is.

- Driver: ``with open_board(board_name(store.name, stage.name)) as board:`` around the stage; the
  driver owns the actor (not detached), so it dies with the driver, and ``open_board`` kills it at
  the end of the stage.
- Trial: ``with trial_heartbeat(board, trial_id): execute_run(...)``; it only looks the board up,
  never creates it (an actor created by a trial would die with the trial's worker).
- Hang rule: ``BoardReader(board).poll()`` never blocks the Tune controller.

A row costs the writing thread a lock and an append; a sender thread forwards the news at most once
per BEAT_INTERVAL_S as a fire-and-forget actor call. The board counts beats itself, so the driver
compares counts, not clocks of other machines.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import Any, Iterator, Mapping

import ray

from psann.runlog import LOG_EVENT, watch_events
from psann.watchdog import AUTOPSY_ROWS

__all__ = [
    "BEAT_INTERVAL_S",
    "POLL_INTERVAL_S",
    "BoardReader",
    "HeartbeatBoard",
    "board_name",
    "open_board",
    "trial_heartbeat",
]

logger = logging.getLogger(__name__)

BEAT_INTERVAL_S = 1.0  # a trial sends at most one beat per this many seconds
POLL_INTERVAL_S = 1.0  # the hang rule asks the board at most this often
LOOKUP_RETRY_S = 10.0  # a board that cannot be found is looked up again after this long
QUERY_GIVE_UP_S = 30.0  # an unanswered query is dropped after this long (the board is lost)
_BOARD_PREFIX = "psann-heartbeat"


def board_name(sweep: str, stage: str) -> str:
    """The actor name of a stage's heartbeat board, e.g. ``psann-heartbeat/hisso_wave/smoke``.

    Derived from the sweep folder's name and the stage, so a restored experiment (a new driver,
    the scheduler unpickled) finds the board the new driver opened under the same name.
    """
    return f"{_BOARD_PREFIX}/{sweep}/{stage}"


@ray.remote(num_cpus=0)
class HeartbeatBoard:
    """trial id -> number of beats, wall time of the last row written, that trial's last rows."""

    def __init__(self) -> None:
        self._trials: dict[str, dict[str, Any]] = {}

    def beat(self, trial_id: str, written_at: float, rows: list[dict[str, str]]) -> None:
        entry = self._trials.setdefault(trial_id, {"beats": 0, "written_at": None, "rows": []})
        entry["beats"] += 1
        entry["written_at"] = written_at
        if rows:
            entry["rows"] = rows

    def counts(self) -> dict[str, int]:
        return {trial_id: entry["beats"] for trial_id, entry in self._trials.items()}

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        return self._trials.get(trial_id)


@contextlib.contextmanager
def open_board(name: str) -> Iterator[str]:
    """Create the stage's board (driver side) for the duration of the block; yields its name."""
    board = HeartbeatBoard.options(name=name, get_if_exists=True, lifetime=None).remote()
    try:
        yield name
    finally:
        try:
            ray.kill(board)
        except Exception as exc:  # noqa: BLE001 - a board already gone is fine
            logger.debug("heartbeat board %s already gone: %s", name, exc)


def _lookup(name: str) -> Any | None:
    if not ray.is_initialized():  # never start a Ray just to look for a board
        return None
    try:
        return ray.get_actor(name)
    except ValueError:  # no actor of that name (not opened, or already killed)
        return None


class _Beater:
    """The trial side: remembers what was written, a sender thread forwards it to the board."""

    def __init__(self, board: Any, name: str, trial_id: str, interval_s: float) -> None:
        self.board = board
        self.name = name
        self.trial_id = trial_id
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._news = threading.Event()  # something was written since the last beat
        self._stopping = threading.Event()
        self._written_at = time.time()
        self._rows: collections.deque[dict[str, str]] = collections.deque(maxlen=AUTOPSY_ROWS)
        self._failed = False
        self._thread = threading.Thread(target=self._send_loop, name=f"heartbeat-{trial_id}", daemon=True)

    def on_output(self, event: str, row: Mapping[str, str]) -> None:
        # Called by the writing thread after every events row / log record: no Ray call here.
        with self._lock:
            self._written_at = time.time()
            if event != LOG_EVENT:
                self._rows.append({k: v for k, v in row.items() if v})  # empty cells are not news
        self._news.set()

    def start(self) -> None:
        self._news.set()  # the beat at start: the trial is alive before it writes anything
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._news.set()
        self._thread.join(timeout=5.0)

    def _send_loop(self) -> None:
        while True:
            self._news.wait()
            self._news.clear()
            self._send()
            # The throttle: news written meanwhile go with the next beat (or the last one, at stop).
            if self._stopping.wait(self.interval_s):
                if self._news.is_set():
                    self._send()
                return

    def _send(self) -> None:
        with self._lock:
            written_at, rows = self._written_at, list(self._rows)
        try:
            self.board.beat.remote(self.trial_id, written_at, rows)  # fire and forget
        except Exception as exc:  # noqa: BLE001 - a lost board costs the heartbeat, never the trial
            if not self._failed:
                self._failed = True
                logger.warning("heartbeat board %s unreachable (%s); trial %s relies on its reports",
                               self.name, exc, self.trial_id)


@contextlib.contextmanager
def trial_heartbeat(
    board: str | None, trial_id: str | None = None, *, interval_s: float = BEAT_INTERVAL_S
) -> Iterator[None]:
    """Inside a trial: every events row or ``psann`` log line is a beat on the stage's board.

    ``trial_id`` defaults to the Tune trial's own id. Rows are watched process-wide, which fits
    Ray: a worker process runs one trial at a time. Without a board (``None``, or none found by
    that name) the block runs without heartbeats and the hang rule uses the trial's reports alone.
    Example::

        with trial_heartbeat(board, tune.get_context().get_trial_id()):
            execute_run(config, run_dir)
    """
    if board is None:
        yield
        return
    if trial_id is None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
    handle = _lookup(board)
    if handle is None or trial_id is None:
        logger.warning("no heartbeat board %r (trial %s): the hang rule sees this trial's reports only", board, trial_id)
        yield
        return
    beater = _Beater(handle, board, trial_id, interval_s)
    beater.start()
    try:
        with watch_events(beater.on_output):
            yield
    finally:
        beater.stop()


class BoardReader:
    """The driver side: which trials beat since the last poll, without ever blocking the caller.

    One query is in flight at a time, issued at most every ``interval_s``; its answer is picked up
    by a later ``poll``. ``confirmed_at`` is when the latest answered query was asked
    (``time.monotonic``): the board vouches for every beat up to then, so a driver that was itself
    stalled never takes its own delay for a trial's silence. A board that cannot be found or does
    not answer for QUERY_GIVE_UP_S is looked up again now and then; meanwhile ``confirmed_at`` is
    None and the hang rule falls back to the report clock. Pickles as its name alone (Tune pickles
    the scheduler that holds it).
    """

    def __init__(self, name: str, *, interval_s: float = POLL_INTERVAL_S) -> None:
        self.name = name
        self.interval_s = interval_s
        self._reset()

    def _reset(self) -> None:
        self._handle: Any | None = None
        self._pending: Any | None = None  # ObjectRef of the query in flight
        self._asked_at = -float("inf")
        self.confirmed_at: float | None = None
        self._looked_up_at = -float("inf")
        self._seen: dict[str, int] = {}
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "interval_s": self.interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def poll(self) -> set[str]:
        """Trial ids that beat since the previous answer (empty while no new answer is in);
        their beats happened before ``confirmed_at``."""
        try:
            return self._poll()
        except Exception as exc:  # noqa: BLE001 - the controller must never crash over a heartbeat
            self._lost(exc)
            return set()

    def _poll(self) -> set[str]:
        now = time.monotonic()
        beating: set[str] = set()
        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if ready:
                ref, self._pending = self._pending, None
                counts = ray.get(ref)
                self.confirmed_at = self._asked_at
                if self._warned:
                    self._warned = False
                    logger.info("heartbeat board %s answers again", self.name)
                for trial_id, count in counts.items():
                    if count > self._seen.get(trial_id, 0):
                        beating.add(trial_id)
                    self._seen[trial_id] = count
            elif now - self._asked_at > QUERY_GIVE_UP_S:
                self._lost(TimeoutError(f"no answer for {QUERY_GIVE_UP_S:g} s"))
        if self._pending is None and now - self._asked_at >= self.interval_s:
            handle = self._board(now)
            if handle is not None:
                self._pending = handle.counts.remote()
                self._asked_at = now
        return beating

    def last_rows(self, trial_id: str, *, timeout_s: float = 2.0) -> list[dict[str, str]] | None:
        """The trial's last events rows as the board has them (None when it cannot tell)."""
        handle = self._board(time.monotonic())
        if handle is None:
            return None
        try:
            entry = ray.get(handle.trial.remote(trial_id), timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc)
            return None
        return list(entry["rows"]) if entry and entry.get("rows") else None

    def _board(self, now: float) -> Any | None:
        if self._handle is None and now - self._looked_up_at >= LOOKUP_RETRY_S:
            self._looked_up_at = now
            self._handle = _lookup(self.name)
            if self._handle is None:
                self._warn(f"no actor named {self.name!r}")
        return self._handle

    def _lost(self, exc: BaseException) -> None:
        self._handle = None
        self._pending = None
        self.confirmed_at = None
        self._warn(f"{type(exc).__name__}: {exc}")

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("heartbeat board %s unavailable (%s): the hang rule uses Tune reports only until it is back",
                           self.name, why)
