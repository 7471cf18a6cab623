"""The hang rule: a trial that writes nothing for ``hang_timeout_s`` is stopped and recorded HUNG.

"Writes" is the operations rule's "no new log output": a Tune result, or any events.csv row or
``psann`` log line of the trial, which the trial publishes as heartbeats on the stage's board
(``sweeps.heartbeat``) because its files reach the sweep folder only at a report.

Tune callbacks see every step but get no handle to stop one trial; schedulers do (Tune passes them
the controller, whose ``stop_trial`` is part of the scheduler-facing API). So the rule is a thin
scheduler wrapper around the stage's own scheduler (ASHA or FIFO): it delegates every decision and,
on each controller step, stops running trials that have been silent too long. See
docs/decisions.md (2026-11-23, "Hang rule as a scheduler wrapper").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune.schedulers import TrialScheduler

from psann.watchdog import AUTOPSY_ROWS, format_rows, last_events
from sweeps.heartbeat import BoardReader
from sweeps.storage import SweepStore
from sweeps.wrapped_scheduler import WrappedScheduler

HUNG_RECORD = "hung_trials.json"

__all__ = ["AUTOPSY_ROWS", "HUNG_RECORD", "HangGuard", "last_events"]

logger = logging.getLogger(__name__)


class HangGuard(WrappedScheduler):
    """Wraps a scheduler; stops running trials silent for longer than ``hang_timeout_s``.

    The clock of a trial starts when it is first seen running (actor start-up is not silence) and
    restarts at each result and at each heartbeat on ``board`` (a ``sweeps.heartbeat.board_name``;
    None: results only). Stopped trials are listed in ``hung`` with their autopsy.
    """

    def __init__(
        self,
        inner: TrialScheduler | None,
        hang_timeout_s: float,
        *,
        store: SweepStore | None = None,
        stage: str | None = None,
        board: str | None = None,
    ) -> None:
        super().__init__(inner)
        self.store = store  # where <stage>/hung_trials.json is written (None: not written)
        self.stage = stage
        self.hang_timeout_s = float(hang_timeout_s)
        self.board = board
        self._reader = BoardReader(board) if board is not None else None
        self._last_activity: dict[str, float] = {}
        self.hung: dict[str, dict[str, Any]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tune pickles the scheduler into its experiment state; after a restore (a new driver
        # process) the old clock readings mean nothing, so every trial's clock starts afresh, and
        # the board is looked up again by name (the new driver opens it under the same name).
        # (BoardReader pickles as its name alone: an actor handle or a query in flight would not
        # survive.) Schedulers pickled before boards existed have no "board": results only.
        self.__dict__.update(state)
        self._last_activity = {}
        self.board = state.get("board")
        self._reader = BoardReader(self.board) if self.board is not None else None

    @staticmethod
    def load_record(store: SweepStore, stage: str) -> dict[str, dict[str, Any]]:
        """Hung trials recorded in a stage folder (empty when none hung)."""
        record = store.read_json(stage, HUNG_RECORD)
        return record if isinstance(record, dict) else {}

    # Delegation: sweeps.wrapped_scheduler; the rule watches results and the controller's steps.
    def _trial_ended(self, trial) -> None:
        self._last_activity.pop(trial.trial_id, None)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        self._last_activity[trial.trial_id] = time.monotonic()
        return self.inner.on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller):
        self._stop_silent_trials(tune_controller)
        return self.inner.choose_trial_to_run(tune_controller)

    def _stop_silent_trials(self, tune_controller) -> None:
        now = time.monotonic()
        confirmed_at = None  # up to when the board vouches for the beats (None: no board answering)
        if self._reader is not None:
            beating = self._reader.poll()  # trials that wrote something since the last answer
            confirmed_at = self._reader.confirmed_at
            for trial_id in beating:
                # Only trials whose clock runs: a late beat of an ended trial must not start the
                # clock of its retry early (the clock starts when a trial is seen running).
                if trial_id in self._last_activity:
                    self._last_activity[trial_id] = max(self._last_activity[trial_id], confirmed_at)
        for trial in list(tune_controller.get_live_trials()):
            if trial.status != "RUNNING" or trial.trial_id in self.hung:
                continue
            last = self._last_activity.setdefault(trial.trial_id, now)
            silent = now - last
            if silent <= self.hang_timeout_s:
                continue
            if confirmed_at is not None and confirmed_at - last <= self.hang_timeout_s:
                continue  # the board has not yet answered for the whole timeout (a slow answer)
            autopsy = self._autopsy(trial.trial_id)
            self.hung[trial.trial_id] = {
                "silent_seconds": round(silent, 1),
                "last_iteration": (trial.last_result or {}).get("training_iteration"),
                "last_events": autopsy,
            }
            logger.warning(
                "trial %s wrote nothing (no result, no events row, no log line) for %.0f s (hang_timeout_s=%g): "
                "stopping it as HUNG; last events:\n%s",
                trial.trial_id, silent, self.hang_timeout_s, autopsy,
            )
            if self.store is not None and self.stage is not None:
                record = self.load_record(self.store, self.stage)
                record[trial.trial_id] = self.hung[trial.trial_id]
                self.store.write_json(record, self.stage, HUNG_RECORD)
            tune_controller.stop_trial(trial)

    def _autopsy(self, trial_id: str) -> str:
        """The trial's last events rows: the board's (fresh) or else the synced events.csv's."""
        rows = self._reader.last_rows(trial_id) if self._reader is not None else None
        if rows:
            return format_rows(rows[-AUTOPSY_ROWS:])
        # Trial folders are named by trial id inside the stage folder (sweeps.stages).
        events = self.store.read_text(self.stage, trial_id, "events.csv") if self.store else None
        return last_events(events)
