"""The Ray Tune function trainable: one trial = one ``psann.runs.execute_run`` in the trial folder.

It reports every main-phase epoch (val_loss, reward, throughput, node) with ``tune.report`` and a
checkpoint holding the resumable training state plus the run files written so far, so a lost node
costs at most one epoch and a restored trial continues its events.csv instead of starting a new one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import ray
import torch
from ray import tune

from psann.contract import MAIN_PHASES, RUN_SUCCESS, TUNE_EPOCH_KEYS, TUNE_FINAL_KEYS, TUNE_METRIC
from psann.runconfig import apply_overrides, parse_run_config
from psann.runs import execute_run
from psann.training import Callback, TrainingLoop, TrainingSnapshot

__all__ = ["TrialRunError", "hisso_trial", "TuneReporter", "TRAINING_STATE"]

logger = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
_CARRIED_FILES = ("events.csv", "config_resolved.yaml", "metrics.json")


class TrialRunError(RuntimeError):
    """The trial's run failed; its metrics.json holds the traceback."""


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
    """Reports each main-phase epoch to Tune with a checkpoint of the training state."""

    def __init__(self, run_dir: Path, *, device: str, started_at: float) -> None:
        self.run_dir = run_dir
        self.device = device
        self.started_at = started_at
        self.node_id = ray.get_runtime_context().get_node_id()
        self.pending: tuple[dict[str, Any], Mapping[str, Any]] | None = None

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        if record.get("phase") not in MAIN_PHASES:
            return
        metrics: dict[str, Any] = {}
        for key in TUNE_EPOCH_KEYS:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[key] = value
        if TUNE_METRIC not in metrics:
            # Schedulers need val_loss in every result; without a validation split the training
            # objective stands in, and the result says so.
            metrics[TUNE_METRIC] = metrics.get("train_loss", math.inf)
            metrics[f"{TUNE_METRIC}_source"] = "train"
        metrics.update(node_id=self.node_id, device=self.device, trial_started_at=self.started_at)
        state = loop.snapshot().to_dict()
        if record["epoch"] >= loop.config.epochs:
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
        staging = Path(tempfile.mkdtemp(prefix="psann-ckpt-"))
        try:
            torch.save(state, staging / TRAINING_STATE)
            for name in _CARRIED_FILES:
                if (self.run_dir / name).exists():
                    shutil.copy2(self.run_dir / name, staging / name)
            best = self.run_dir / "checkpoints" / "best"
            if best.is_dir():
                shutil.copytree(best, staging / "best")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(staging)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _set_aside_previous_attempt(run_dir: Path) -> None:
    """A retried trial without a checkpoint keeps the failed attempt's files under attempts/N/."""
    if not (run_dir / "metrics.json").exists():
        return
    attempts = run_dir / "attempts"
    attempts.mkdir(exist_ok=True)
    target = attempts / str(len(list(attempts.iterdir())) + 1)
    target.mkdir()
    for name in ("metrics.json", "events.csv", "config_resolved.yaml", "run.log", "checkpoints"):
        if (run_dir / name).exists():
            shutil.move(str(run_dir / name), str(target / name))


def _restore_from_checkpoint(run_dir: Path, device: str) -> Mapping[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        state = torch.load(folder / TRAINING_STATE, map_location=device, weights_only=True)
        for name in _CARRIED_FILES:
            # Files in the working dir are newer when the trial restarts on the same node; a new
            # node starts empty and gets the checkpoint's copies (at most one epoch behind).
            if (folder / name).exists() and not (run_dir / name).exists():
                shutil.copy2(folder / name, run_dir / name)
        best = run_dir / "checkpoints" / "best"
        if (folder / "best").is_dir() and not best.exists():
            shutil.copytree(folder / "best", best)
    snapshot = TrainingSnapshot.from_dict(state)
    logger.info("resuming from checkpoint after epoch %s", snapshot.epoch)
    return snapshot


def hisso_trial(
    config: dict[str, Any],
    *,
    base_config: Mapping[str, Any],
    base_dir: str,
    base_source: str,
    stage_overrides: Mapping[str, Any],
    seed: int,
) -> None:
    """Tune function trainable: ``config`` holds the sampled dotted-path parameters."""
    started_at = time.time()
    overrides = {**dict(stage_overrides), **dict(config)}
    run_config = parse_run_config(apply_overrides(base_config, overrides), base_dir=base_dir, source=base_source)
    device = _device_from_grant()
    _use_granted_cpus()
    # Tune runs a function trainable in its trial working directory, synced to the trial folder.
    run_dir = Path(os.getcwd())
    state = _restore_from_checkpoint(run_dir, device)
    if state is None:
        _set_aside_previous_attempt(run_dir)
    reporter = TuneReporter(run_dir, device=device, started_at=started_at)
    result = execute_run(run_config, run_dir, device=device, seed=seed, callbacks=[reporter], resume_state=state)
    if result.status == RUN_SUCCESS:
        reporter.report_final(result.metrics)
    else:
        error = (result.metrics.get("error") or result.status).strip().splitlines()
        raise TrialRunError(f"run {result.status} in {run_dir}: {error[-1] if error else result.status}")
