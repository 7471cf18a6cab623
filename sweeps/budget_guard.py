"""A stage's budget on Ray Tune: past it, no trial is launched and running ones stop at their next report.

Why a scheduler wrapper (like the hang rule, ``sweeps.watchdog``) and not a ``tune.Stopper``: a
Stopper's ``stop_all()`` makes Tune remove every live trial's actor at once, cutting running
trials in the middle of an epoch, and a scheduler's ``choose_trial_to_run`` only orders launches
(Tune stages every PENDING trial anyway). A scheduler is handed the controller's scheduler-facing
API, which has what the rule needs: ``search_alg`` (``set_finished()``: no new trials),
``stop_trial`` (a PENDING trial ends without ever starting) and per-result decisions (``STOP`` on a
running trial's next report, which is an epoch end with a checkpoint: nothing is lost).

The guard checks the budget at every controller step and keeps ``<stage>/budget.json`` (what was
spent, what it stopped) current, so a resumed driver goes on counting from there and the runner
records the stage as BUDGET_STOPPED. See docs/sweeps.md, "Budgets".
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweeps.budget import BUDGET_RECORD, BudgetMeter, BudgetSpec
from sweeps.storage import SweepStore
from sweeps.wrapped_scheduler import WrappedScheduler

__all__ = ["BudgetGuard"]

logger = logging.getLogger(__name__)

SAVE_EVERY_S = 15.0  # budget.json refresh while trials run (also written at every trial end)


class BudgetGuard(WrappedScheduler):
    """Wraps a scheduler; once ``budget`` is spent, launches nothing more and stops running trials
    at their next report. Stopped trial ids and the spend are written to ``<stage>/budget.json``."""

    def __init__(self, inner: TrialScheduler | None, budget: BudgetSpec, gpus_per_trial: float, *,
                 store: SweepStore, stage: str) -> None:
        super().__init__(inner)
        self.budget = budget
        self.gpus_per_trial = float(gpus_per_trial)
        self.store = store
        self.stage = stage
        self._reset()

    def _reset(self) -> None:
        self._meter: BudgetMeter | None = None  # built at the first step (after a restore: from budget.json)
        self.exhausted_by: str | None = None
        self.stopped_at_report: set[str] = set()  # running trials stopped at a report
        self.not_launched: set[str] = set()  # trials ended before they ever ran
        self._ever_ran: set[str] = set()
        self._saved_at = 0.0
        self._searcher_finished = False  # told this driver's search algorithm to suggest nothing more

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_meter"] = None  # clock readings mean nothing in another driver process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A restored experiment (a new driver) starts from budget.json, the one record of the spend.
        self.__dict__.update(state)
        self._reset()

    # -- delegation: sweeps.wrapped_scheduler; what differs from it ------------------------------

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def _trial_ended(self, trial) -> None:
        self._ended(trial)

    # -- the rule ---------------------------------------------------------------------------------

    def on_trial_result(self, tune_controller, trial, result) -> str:
        self._ever_ran.add(trial.trial_id)
        if self.exhausted_by is None:
            self._check(tune_controller, time.monotonic())
        if self.exhausted_by is not None:
            # The trial has just reported (an epoch end, with a checkpoint): it stops here.
            self.stopped_at_report.add(trial.trial_id)
            logger.info("stage %s: trial %s stopped at epoch %s: the stage's budget is spent",
                        self.stage, trial.trial_id, result.get("epoch"))
            self._save(time.monotonic(), force=True)
            return TrialScheduler.STOP
        return self.inner.on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller):
        now = time.monotonic()
        running = {t.trial_id for t in tune_controller.get_live_trials() if t.status == Trial.RUNNING}
        self._ever_ran |= running
        self._meter_now().observe(running, now)
        if self.exhausted_by is None:
            self._check(tune_controller, now)
        if self.exhausted_by is not None:
            if not self._searcher_finished:  # also after a restore that found the budget spent
                tune_controller.search_alg.set_finished()
                self._searcher_finished = True
            self._stop_unstarted(tune_controller)
            self._save(now)
            return None
        self._save(now)
        return self.inner.choose_trial_to_run(tune_controller)

    def _meter_now(self) -> BudgetMeter:
        if self._meter is None:
            record = self.store.read_json(self.stage, BUDGET_RECORD) or {}
            spent_gpu = float(record.get("spent_gpu_hours") or 0.0) * 3600.0
            spent_wall = float(record.get("spent_wall_minutes") or 0.0) * 60.0
            self._meter = BudgetMeter(self.budget, self.gpus_per_trial, gpu_seconds=spent_gpu, wall_seconds=spent_wall)
            self.exhausted_by = record.get("exhausted_by")
            self.stopped_at_report |= set(record.get("stopped_at_report") or ())
            self.not_launched |= set(record.get("not_launched") or ())
        return self._meter

    def _check(self, tune_controller, now: float) -> None:
        reason = self._meter_now().exhausted_by(now)
        if reason is None:
            return
        self.exhausted_by = reason
        spent = self._meter_now().spent(now)
        running = sorted(self._meter_now().running)
        logger.warning(
            "stage %s: budget spent (%s: %.4g GPU h of %s, %.3g wall min of %s): launching no more trials; "
            "%d running trial(s) stop at their next report",
            self.stage, reason, spent["spent_gpu_hours"], self.budget.gpu_hours, spent["spent_wall_minutes"],
            self.budget.wall_minutes, len(running),
        )
        tune_controller.search_alg.set_finished()  # the searcher suggests nothing more
        self._searcher_finished = True
        self._save(now, force=True)

    def _stop_unstarted(self, tune_controller) -> None:
        waiting = [t for t in tune_controller.get_live_trials() if t.status in (Trial.PENDING, Trial.PAUSED)]
        for trial in waiting:
            # A trial that reported before (a retry, or one restored by --resume) has run.
            ran = (trial.trial_id in self._ever_ran or trial.trial_id in self.stopped_at_report
                   or (getattr(trial, "last_result", None) or {}).get("training_iteration"))
            if not ran:
                self.not_launched.add(trial.trial_id)
            else:
                self.stopped_at_report.add(trial.trial_id)  # a retry or restored trial: not restarted
            tune_controller.stop_trial(trial)
        if waiting:
            self._save(time.monotonic(), force=True)

    def _ended(self, trial) -> None:
        if self._meter is not None and trial.trial_id in self._meter.running:
            now = time.monotonic()
            self._meter.end(trial.trial_id, now)
            self._save(now, force=True)

    def _save(self, now: float, force: bool = False) -> None:
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = now
        meter = self._meter_now()
        self.store.write_json({
            "stage": self.stage,
            "budget": self.budget.to_json(),
            "gpus_per_trial": self.gpus_per_trial,
            **meter.spent(now),
            "exhausted_by": self.exhausted_by,
            "stopped_at_report": sorted(self.stopped_at_report),
            "not_launched": sorted(self.not_launched),
        }, self.stage, BUDGET_RECORD)
