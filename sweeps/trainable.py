"""The Ray Tune function trainable: one trial = one ``psann.runs.execute_run`` in the trial folder.

It reports main-phase epochs (val_loss, its smoothed value, reward, throughput, node) with
``tune.report`` and a checkpoint holding the resumable training state plus the run files written
so far. Reports follow the stage's cadence (every N epochs or T seconds, whichever first) and
always include ASHA's rung epochs and the last epoch, so pruning never depends on the cadence; a
lost node costs at most the work since the last report. A trial restored from a checkpoint
continues its events.csv from that checkpoint's epoch: no epoch is logged twice.

What a checkpoint holds, its manifest, and how a restarted trial finds the newest complete one
(listed in Tune's saved experiment state or not) live in ``sweeps.trial_checkpoints``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import ray
import torch
from ray import tune

from psann.contract import (
    MAIN_PHASES,
    RANK_WINDOW,
    REPEAT_KEY,
    RUN_SUCCESS,
    TUNE_EPOCH_KEYS,
    TUNE_FINAL_KEYS,
    TUNE_METRIC,
    error_kind,
    smoothed_loss,
)
from psann.runconfig import apply_overrides, parse_run_config
from psann.runs import execute_run
from psann.training import Callback, TrainingLoop, TrainingSnapshot
from sweeps import trial_checkpoints
from sweeps.heartbeat import trial_heartbeat
from sweeps.spec import ReportSpec
from sweeps.trial_checkpoints import (
    CHECKPOINT_MANIFEST,
    TRAINING_STATE,
    _clear_next_checkpoint_folder,
    _stage_checkpoint,
    _start_attempt,
    _TrialFolder,
    find_restore_point,
    staging_folder,
)

__all__ = ["TrialRunError", "hisso_trial", "TuneReporter", "TRAINING_STATE", "CHECKPOINT_MANIFEST",
           "find_restore_point", "staging_folder"]

# Still reachable here, where tests/sweeps/test_trainable_restore.py and earlier callers find them.
_write_manifest = trial_checkpoints._write_manifest
_pull_run_files = trial_checkpoints._pull_run_files
cut_events = trial_checkpoints.cut_events


class TrialRunError(RuntimeError):
    """The trial's run failed; its metrics.json holds the traceback and the ``error_kind``.

    The exception carries the kind too (``psann.contract.error_kind`` reads the attribute), so the
    error Tune records says what kind of failure it wraps.
    """

    def __init__(self, message: str, error_kind: str | None = None) -> None:
        super().__init__(message)
        self.error_kind = error_kind

    def __reduce__(self):  # it crosses process boundaries (Ray pickles a trial's error)
        return (type(self), (str(self.args[0]) if self.args else "", self.error_kind))


def torch_threads_for(cpu: float) -> int:
    """Torch intra-op threads for a trial granted ``cpu`` CPUs: max(1, floor(cpu)).

    Under contention more threads than granted CPUs made the same small fit vary from 0.6 s to
    22 s on 2 cores (against a steady 0.6 s with 1 thread).
    """
    return max(1, int(math.floor(cpu)))


def _use_granted_cpus() -> int:
    """Set this worker's torch threads from the trial's CPU grant (workers are reused: set every trial)."""
    granted = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = torch_threads_for(granted)
    torch.set_num_threads(threads)
    return threads


def _device_from_grant() -> str:
    """CUDA when Ray granted this trial a GPU and CUDA works here; CPU otherwise."""
    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


class TuneReporter(Callback):
    """Reports main-phase epochs to Tune, each with a checkpoint of the training state.

    Every epoch's val_loss enters the smoothed value (the mean of the last ``rank_window``), so it
    does not depend on which epochs are reported. An epoch is reported when it is one of
    ``milestones`` (ASHA's rungs) or when ``report`` says one is due; the last epoch always is,
    after the run's final files are written.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        device: str,
        started_at: float,
        rank_window: int = RANK_WINDOW,
        report: ReportSpec | None = None,
        milestones: tuple[int, ...] = (),
        resumed: TrainingSnapshot | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.device = device
        self.started_at = started_at
        self.rank_window = rank_window
        self.report = report or ReportSpec(every_epochs=1, every_seconds=None)
        self.milestones = frozenset(milestones)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.pending: tuple[dict[str, Any], Mapping[str, Any]] | None = None
        self.losses: list[float] = []
        self.last_report_epoch = 0
        self.last_report_time = time.monotonic()
        if resumed is not None:
            # The smoothed value continues over the epochs before the checkpoint.
            self.losses = [self._loss(r) for r in resumed.history if r.get("phase") in MAIN_PHASES]
            self.last_report_epoch = resumed.epoch if resumed.phase in MAIN_PHASES else 0

    @staticmethod
    def _loss(record: Mapping[str, Any]) -> float:
        value = record.get("val_loss", record.get("train_loss"))
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        if record.get("phase") not in MAIN_PHASES:
            return
        self.losses.append(self._loss(record))
        epoch = int(record["epoch"])
        last = epoch >= loop.config.epochs
        due = epoch in self.milestones or self.report.due(
            epoch - self.last_report_epoch, time.monotonic() - self.last_report_time)
        if not (last or due):
            return
        metrics: dict[str, Any] = {}
        for key in TUNE_EPOCH_KEYS:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[key] = value
        if "val_loss" not in metrics:
            # Without a validation split the training objective stands in, and the result says so.
            metrics["val_loss"] = metrics.get("train_loss", math.inf)
            metrics["val_loss_source"] = "train"
        smoothed = smoothed_loss(self.losses, self.rank_window)
        # Schedulers need the metric in every result: a diverged window ranks last.
        metrics[TUNE_METRIC] = math.inf if smoothed is None else smoothed
        metrics.update(node_id=self.node_id, device=self.device, trial_started_at=self.started_at)
        state = loop.snapshot().to_dict()
        if last:
            # The last epoch is reported after the run has evaluated and written its final files:
            # ASHA stops a trial as soon as it reports max_t, and nothing after that report runs.
            self.pending = (metrics, state)
            return
        self._report(metrics, state)

    def report_final(self, run_metrics: Mapping[str, Any]) -> None:
        """Report the held-back last epoch, with the run's test metrics, once files are final."""
        if self.pending is None:
            return
        metrics, state = self.pending
        self.pending = None
        for key in TUNE_FINAL_KEYS:
            value = run_metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[key] = value
        self._report(metrics, state)

    def _report(self, metrics: dict[str, Any], state: Mapping[str, Any]) -> None:
        metrics["reported_at"] = time.time()
        staging = staging_folder(self.run_dir)
        shutil.rmtree(staging, ignore_errors=True)  # what a report killed midway left
        staging.mkdir(parents=True)
        try:
            _stage_checkpoint(staging, self.run_dir, state, epoch=int(metrics.get("epoch", 0)),
                              written_at=metrics["reported_at"])
            _clear_next_checkpoint_folder()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.last_report_epoch = int(metrics.get("epoch", self.last_report_epoch))
        self.last_report_time = time.monotonic()


def hisso_trial(
    config: dict[str, Any],
    *,
    base_config: Mapping[str, Any],
    base_dir: str,
    base_source: str,
    stage_overrides: Mapping[str, Any],
    seed: int,
    rank_window: int = RANK_WINDOW,
    report: ReportSpec | None = None,
    milestones: tuple[int, ...] = (),
    board: str | None = None,
    git: Mapping[str, Any] | None = None,
) -> None:
    """Tune function trainable: ``config`` holds the sampled dotted-path parameters.

    With repeats, ``config[REPEAT_KEY]`` is the repeat index r and the run's seed is seed + r.
    ``git`` is the driver's ``psann.provenance.git_facts()``: a cluster worker has no checkout to
    ask, so the trial's metrics.json records the commit the driver ran (None: asked here).
    """
    started_at = time.time()
    sampled = dict(config)
    repeat = int(sampled.pop(REPEAT_KEY, 0) or 0)
    overrides = {**dict(stage_overrides), **sampled}
    run_config = parse_run_config(apply_overrides(base_config, overrides), base_dir=base_dir, source=base_source)
    device = _device_from_grant()
    _use_granted_cpus()
    # Tune runs a function trainable in its trial working directory, synced to the trial folder.
    run_dir = Path(os.getcwd())
    state = _start_attempt(_TrialFolder.of_session(run_dir), run_dir, device)
    reporter = TuneReporter(run_dir, device=device, started_at=started_at, rank_window=rank_window,
                            report=report, milestones=milestones, resumed=state)
    # Every events row and psann log line of the run is a heartbeat on the stage's board (the hang rule).
    with trial_heartbeat(board):
        result = execute_run(run_config, run_dir, device=device, seed=seed + repeat, callbacks=[reporter],
                             resume_state=state, git=git)
    if result.status == RUN_SUCCESS:
        reporter.report_final(result.metrics)
    else:
        kind = result.metrics.get("error_kind") or error_kind(result.status)
        error = (result.metrics.get("error") or result.status).strip().splitlines()
        # The trial folder is in the outcome (stage_status.json); the message is the run's own last line.
        raise TrialRunError(f"run {result.status} ({kind}): {error[-1] if error else result.status}", error_kind=kind)
