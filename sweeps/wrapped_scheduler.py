"""The base of the stage rules that ride on Tune's scheduler (the hang rule, the budget).

Tune hands a scheduler the controller's scheduler-facing API (``stop_trial``, the search
algorithm), which a callback does not get; so a stage rule is a thin scheduler around the stage's
own (ASHA or FIFO) that delegates every decision to it. ``WrappedScheduler`` is that delegation,
once; a rule overrides what it watches and learns of a trial's end through ``_trial_ended``.
"""

from __future__ import annotations

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

__all__ = ["WrappedScheduler"]


class WrappedScheduler(TrialScheduler):
    """Delegates every scheduling decision to ``inner`` (FIFO when None)."""

    def __init__(self, inner: TrialScheduler | None) -> None:
        self.inner = inner or FIFOScheduler()

    def _trial_ended(self, trial) -> None:
        """Called before the inner scheduler hears that ``trial`` errored, completed or was removed."""

    # Tune sets metric/mode on the scheduler; keep the inner one in step.
    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    @property
    def metric(self):
        return getattr(self.inner, "metric", None)

    def on_trial_add(self, tune_controller, trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._trial_ended(trial)
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._trial_ended(trial)
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_ended(trial)
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str):
        return self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str):
        return self.inner.restore(checkpoint_path)
