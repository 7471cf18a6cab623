"""The hang rule: a trial that reports nothing for ``hang_timeout_s`` is stopped and recorded HUNG.

Tune callbacks see every step but get no handle to stop one trial; schedulers do (Tune passes them
the controller, whose ``stop_trial`` is part of the scheduler-facing API). So the rule is a thin
scheduler wrapper around the stage's own scheduler (ASHA or FIFO): it delegates every decision and,
on each controller step, stops running trials that have been silent too long. See
docs/decisions.md (2026-11-23, "Hang rule as a scheduler wrapper").
"""

from __future__ import annotations

import csv
import io
import logging
import time
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sweeps.storage import SweepStore

HUNG_RECORD = "hung_trials.json"
AUTOPSY_ROWS = 3  # last events.csv rows kept as a hung trial's autopsy

__all__ = ["AUTOPSY_ROWS", "HUNG_RECORD", "HangGuard", "last_events"]

logger = logging.getLogger(__name__)


def last_events(events_csv: str | None) -> str:
    """The last AUTOPSY_ROWS rows of a trial's events.csv text as one line each (the autopsy)."""
    if events_csv is None:
        return "(no events.csv yet)"
    records = list(csv.DictReader(io.StringIO(events_csv)))
    if not records:
        return "(events.csv has no rows)"
    out = io.StringIO()
    for record in records[-AUTOPSY_ROWS:]:
        fields = [f"{k}={v}" for k, v in record.items() if v not in ("", None) and k != "timestamp"]
        out.write(f"{record.get('timestamp', '')} " + " ".join(fields) + "\n")
    return out.getvalue().strip()


class HangGuard(TrialScheduler):
    """Wraps a scheduler; stops running trials silent for longer than ``hang_timeout_s``.

    The clock of a trial starts when it is first seen running (actor start-up is not silence) and
    restarts at each result. Stopped trials are listed in ``hung`` with their autopsy.
    """

    def __init__(
        self,
        inner: TrialScheduler | None,
        hang_timeout_s: float,
        *,
        store: SweepStore | None = None,
        stage: str | None = None,
    ) -> None:
        self.inner = inner or FIFOScheduler()
        self.store = store  # where <stage>/hung_trials.json is written (None: not written)
        self.stage = stage
        self.hang_timeout_s = float(hang_timeout_s)
        self._last_activity: dict[str, float] = {}
        self.hung: dict[str, dict[str, Any]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Tune pickles the scheduler into its experiment state; after a restore (a new driver
        # process) the old clock readings mean nothing, so every trial's clock starts afresh.
        self.__dict__.update(state)
        self._last_activity = {}

    @staticmethod
    def load_record(store: SweepStore, stage: str) -> dict[str, dict[str, Any]]:
        """Hung trials recorded in a stage folder (empty when none hung)."""
        record = store.read_json(stage, HUNG_RECORD)
        return record if isinstance(record, dict) else {}

    # Tune sets metric/mode on the scheduler; keep the inner one in step.
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    @property
    def metric(self):
        return getattr(self.inner, "metric", None)

    def on_trial_add(self, tune_controller, trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._last_activity.pop(trial.trial_id, None)
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        self._last_activity[trial.trial_id] = time.monotonic()
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._last_activity.pop(trial.trial_id, None)
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._last_activity.pop(trial.trial_id, None)
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        self._stop_silent_trials(tune_controller)
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str):
        return self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        return self.inner.restore(checkpoint_path)

    def _stop_silent_trials(self, tune_controller) -> None:
        now = time.monotonic()
        for trial in list(tune_controller.get_live_trials()):
            if trial.status != "RUNNING" or trial.trial_id in self.hung:
                continue
            last = self._last_activity.setdefault(trial.trial_id, now)
            silent = now - last
            if silent <= self.hang_timeout_s:
                continue
            # Trial folders are named by trial id inside the stage folder (sweeps.stages).
            events = self.store.read_text(self.stage, trial.trial_id, "events.csv") if self.store else None
            autopsy = last_events(events)
            self.hung[trial.trial_id] = {
                "silent_seconds": round(silent, 1),
                "last_iteration": (trial.last_result or {}).get("training_iteration"),
                "last_events": autopsy,
            }
            logger.warning(
                "trial %s reported nothing for %.0f s (hang_timeout_s=%g): stopping it as HUNG; last events:\n%s",
                trial.trial_id, silent, self.hang_timeout_s, autopsy,
            )
            if self.store is not None and self.stage is not None:
                record = self.load_record(self.store, self.stage)
                record[trial.trial_id] = self.hung[trial.trial_id]
                self.store.write_json(record, self.stage, HUNG_RECORD)
            tune_controller.stop_trial(trial)
