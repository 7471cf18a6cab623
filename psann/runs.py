"""One run: config -> data -> estimator -> fit -> evaluate -> files in the run folder.

The CLI (``python -m psann.scripts.hisso_log_run``) and the Ray Tune trainable both call
``execute_run``; neither shells out to the other. The folder contract is docs/run_outputs.md.

State stays local to the call: the run's own log handlers (removed at the end), seeded generator
objects inside the estimator, no patched globals; so several runs in one process (Ray reuses its
worker processes) give the same results as the same runs in separate processes.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from psann.contract import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ERROR_INTERRUPTED,
    METRICS_KEYS,
    RUN_ERROR,
    RUN_INTERRUPTED,
    RUN_RUNNING,
    RUN_SUCCESS,
    equity_file,
    error_kind,
)
from psann.data import load_loader, load_npz
from psann.evaluation import context_for, evaluate_split, write_equity_csv
from psann.provenance import collect_provenance
from psann.errors import ValidationError
from psann.runconfig import ConfigError, RunConfig, load_config_file, parse_run_config
from psann.runlog import EventLog, RunLogging, write_json_atomic, write_yaml_atomic
from psann.training import Callback, TrainingLoop, TrainingSnapshot

__all__ = ["RunResult", "execute_run", "load_dataset", "load_run_config", "prepare_run_dir"]

logger = logging.getLogger("psann.runs")


@dataclass(frozen=True)
class RunResult:
    """What a run left behind: its status, folder, final metrics and the CLI exit code."""

    status: str  # one of psann.contract.RUN_STATUSES (not running)
    run_dir: Path
    metrics: dict[str, Any]
    exit_code: int


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config file (YAML or JSON)."""
    path = Path(path)
    return parse_run_config(load_config_file(path), base_dir=path.parent, source=str(path))


def load_dataset(config: RunConfig) -> dict[str, np.ndarray]:
    """Load and validate the config's dataset and check it against the config (ConfigError)."""
    try:
        if "npz" in config.data:
            data = load_npz(config.data["npz"])
        else:
            data = load_loader(config.data["loader"], config.data["kwargs"])
    except FileNotFoundError as exc:
        raise ConfigError("data.npz", str(exc)) from exc
    except (ValueError, TypeError) as exc:
        # A loader's own argument check names the argument: key it where the config sets it.
        kwargs = config.data.get("kwargs") or {}
        if isinstance(exc, ValidationError) and "loader" in config.data and exc.key.split(".")[0].split("[")[0] in kwargs:
            raise ConfigError(f"data.kwargs.{exc.key}", exc.reason) from exc
        key = "data.npz" if "npz" in config.data else "data.loader"
        raise ConfigError(key, str(exc)) from exc
    if config.hisso is None and "y_train" not in data:
        raise ConfigError("data", "a supervised run (hisso.enabled false) needs y_train in the dataset")
    if config.hisso is not None and config.hisso.supervised is not None:
        y_key = config.hisso.supervised.y_key
        if y_key not in data:
            raise ConfigError("hisso.supervised.y_key", f"{y_key!r} is not in the dataset (keys: {', '.join(sorted(data))})")
        if data[y_key].shape[0] != data["X_train"].shape[0]:
            # The warm start fits X_train against these targets row by row.
            raise ConfigError(
                "hisso.supervised.y_key",
                f"{y_key} has {data[y_key].shape[0]} rows but X_train has {data['X_train'].shape[0]}; "
                "warm-start targets must be aligned with X_train (usually y_train)",
            )
    split = config.eval_split
    if f"X_{split}" not in data:
        raise ConfigError("evaluation.split", f"the dataset has no X_{split} (keys: {', '.join(sorted(data))})")
    prices_key = config.portfolio_prices_key
    explicit = config.resolved.get("evaluation", {}).get("portfolio_prices_key") != "prices_test"
    if prices_key and prices_key not in data and explicit:
        raise ConfigError("evaluation.portfolio_prices_key", f"{prices_key!r} is not in the dataset")
    if config.hisso is not None:
        for name in ("train", "val"):
            if f"X_{name}" in data and data[f"X_{name}"].shape[0] < config.hisso.window:
                raise ConfigError(
                    "hisso.window",
                    f"{config.hisso.window} is longer than X_{name} ({data[f'X_{name}'].shape[0]} rows)",
                )
        if data["X_train"].ndim > 2 and context_for(data, "train") is None:
            raise ConfigError(
                "data", f"X_train holds windows {data['X_train'].shape[1:]}, which cannot be read as prices; add prices_* keys"
            )
    _check_conditioning(config, data)
    return data


def _check_conditioning(config: RunConfig, data: Mapping[str, np.ndarray]) -> None:
    """cond_* dataset keys and estimator.params.context_dim must agree (before any work)."""
    context_dim = int(config.estimator_params.get("context_dim") or 0)
    given = sorted(key for key in data if key.startswith("cond_"))
    if given and not context_dim:
        raise ConfigError(
            "estimator.params.context_dim",
            f"the dataset has {', '.join(given)} (per-sample conditioning) but context_dim is 0; "
            "set it to their width (WaveResNetRegressor)",
        )
    if not context_dim:
        return
    if not given and config.estimator_params.get("conditioning_builder") is None:
        raise ConfigError(
            "estimator.params.context_dim",
            f"{context_dim} needs cond_* dataset keys or estimator.params.conditioning_builder",
        )
    for key in given:
        if data[key].shape[1] != context_dim:
            raise ConfigError(key, f"expected {context_dim} columns (estimator.params.context_dim), got {data[key].shape}")
    if given and "cond_train" not in given:
        raise ConfigError("cond_train", f"missing, but {', '.join(given)} given")


def prepare_run_dir(output_dir: str | Path, run_name: str) -> Path:
    """Create a fresh run folder; an existing one is never reused: a numeric suffix is added."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    candidate = output_dir / run_name
    suffix = 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            candidate = output_dir / f"{run_name}-{suffix}"
            suffix += 1
    if candidate.name != run_name:
        logger.warning("run folder %s exists; writing to %s instead", output_dir / run_name, candidate)
    return candidate


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _RunRecorder(Callback):
    """Writes events.csv rows, the metrics.json snapshot and checkpoints from the loop's records."""

    def __init__(self, run: "_Run") -> None:
        self.run = run

    def on_train_begin(self, loop: TrainingLoop, info: dict[str, Any]) -> None:
        facts = " ".join(f"{k}={v}" for k, v in info.items())
        self.run.events.write("shuffle_policy", phase=info.get("phase"), message=facts)
        logger.info("%s phase: %s", info.get("phase"), facts)

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        run = self.run
        fields = {k: record.get(k) for k in record}
        run.events.write("epoch", **fields)
        if record["phase"] != run.main_phase:
            return
        run.last_record = record
        est = run.estimator
        checkpoints = run.run_dir / "checkpoints"
        if record.get("is_best"):
            est.best_epoch_ = record["epoch"]
            est.save(checkpoints / "best", overwrite=True)
            run.best_record = dict(record)
        if run.keep_checkpoints:
            est.save(checkpoints / f"epoch_{record['epoch']:04d}", overwrite=True)
        run.write_metrics(RUN_RUNNING)

    def on_train_end(self, loop: TrainingLoop) -> None:
        if loop.config.phase == "warm_start":
            self.run.estimator.save(self.run.run_dir / "checkpoints" / "warm_start", overwrite=True)
            self.run.events.write("checkpoint", phase="warm_start", message="warm-start checkpoint saved")


class _Run:
    """The mutable state of one execute_run call (never shared between runs)."""

    def __init__(self, config: RunConfig, run_dir: Path, *, seed: int, device: str | None, keep_checkpoints: bool,
                 git: Mapping[str, Any] | None = None):
        self.config = config
        self.git = git
        self.provenance: dict[str, Any] | None = None
        self.run_dir = run_dir
        self.keep_checkpoints = keep_checkpoints
        params = dict(config.estimator_params)
        if device is not None:
            params["device"] = device
        # The one seed rule: the estimator's random_state wins; otherwise the run's --seed.
        self.seed = int(params["random_state"]) if params.get("random_state") is not None else int(seed)
        params["random_state"] = self.seed
        self.estimator = config.estimator_cls(**params)
        self.main_phase = "hisso" if config.hisso is not None else "supervised"
        self.started = time.perf_counter()
        self.events: EventLog | None = None
        self.last_record: dict[str, Any] | None = None
        self.best_record: dict[str, Any] | None = None
        self.metrics: dict[str, Any] = {}

    def base_metrics(self) -> dict[str, Any]:
        hisso = self.config.hisso
        est = self.estimator
        return {
            "run_name": self.run_dir.name,
            "config_path": self.config.source,
            "estimator": type(est).__name__,
            "loss_kind": "neg_reward" if hisso is not None else "mse",
            "reward": (getattr(est, "hisso_", None) or {}).get("reward") if hisso is not None else None,
            "transition_penalty": hisso.transition_penalty if hisso is not None else None,
            "device": str(getattr(est, "device_", est.device)),
            "seed": self.seed,
            "epochs_planned": int(est.epochs),
            "eval_split": self.config.eval_split,
            "provenance": self._provenance(),
        }

    def _provenance(self) -> dict[str, Any]:
        """psann.provenance facts of this process, read once, on the device the run trains on."""
        if self.provenance is None:
            est = self.estimator
            device = getattr(est, "device_", None)
            if device is None and str(est.device).split(":")[0] in ("cpu", "cuda", "mps"):
                device = est.device  # before fit: the requested device ("auto" is resolved by fit)
            self.provenance = collect_provenance(device, git=self.git)
        return self.provenance

    def write_metrics(self, status: str, **extra: Any) -> None:
        """Write metrics.json: every key of the run contract, null when not applicable."""
        best = self.best_record or {}
        last = self.last_record or {}
        history = [r for r in (getattr(self.estimator, "history_", None) or []) if r.get("phase") == self.main_phase]
        throughput = self._throughput(history or ([last] if last else []))
        hisso = self.main_phase == "hisso"
        metrics: dict[str, Any] = dict.fromkeys(METRICS_KEYS)
        metrics.update(self.base_metrics())
        metrics.update(
            status=status,
            train_loss=_finite(best.get("train_loss")),
            val_loss=_finite(best.get("val_loss")),
            val_mse=_finite(best.get("val_mse")),
            best_epoch=best.get("epoch"),
            epochs_run=last.get("epoch"),
            reward_mean=_finite(best.get("reward_mean")),
            reward_std=_finite(best.get("reward_std")),
            episodes=last.get("episodes"),
            duration_seconds=time.perf_counter() - self.started,
            throughput_eps_per_sec=throughput if hisso else None,
            throughput_samples_per_sec=None if hisso else throughput,
            amp=getattr(self.estimator, "amp_", None) or {"enabled": False, "dtype": None, "skipped_steps": 0},
            compile=getattr(self.estimator, "compile_", None) or {
                "enabled": bool(getattr(self.estimator, "compile", False)),
                "seconds": last.get("compile_seconds"),
                "graphs": last.get("compiled_graphs"),
            },
            threads=torch.get_num_threads(),
        )
        metrics.update(extra)
        self.metrics = metrics
        write_json_atomic(self.run_dir / "metrics.json", metrics)

    def _throughput(self, records: Sequence[Mapping[str, Any]]) -> float | None:
        """Median over the main phase's epochs of episodes (HISSO) or samples per second."""
        key = "episodes_per_second" if self.main_phase == "hisso" else "samples_per_second"
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        return float(statistics.median(values)) if values else None


def execute_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    dataset: Mapping[str, np.ndarray] | None = None,
    device: str | None = None,
    seed: int = 42,
    keep_checkpoints: bool | None = None,
    console: bool = False,
    verbose: bool = False,
    callbacks: Sequence[Callback] = (),
    resume_state: TrainingSnapshot | Mapping[str, Any] | None = None,
    git: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run one config into ``run_dir`` (which must exist); never raises for a failed fit.

    A failure writes metrics.json with status "error", the traceback and its ``error_kind``
    (``psann.contract.error_kind``: exception, non_finite or out_of_memory), and an ``error`` event;
    Ctrl-C writes status "interrupted" (error_kind "interrupted"). Returns the status and the CLI
    exit code. metrics.json's ``provenance`` (psann.provenance) is read in this process; ``git``
    (``psann.provenance.git_facts()`` of a sweep's driver) replaces asking git here, for workers
    that have no checkout.

    Example::

        config = load_run_config("configs/hisso/dense_cpu_smoke.yaml")
        result = execute_run(config, prepare_run_dir("runs", "smoke"))
    """
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists() and resume_state is None:
        raise FileExistsError(f"{run_dir} already holds a run (metrics.json); pick another folder or resume")
    keep = config.keep_checkpoints if keep_checkpoints is None else keep_checkpoints
    run = _Run(config, run_dir, seed=seed, device=device, keep_checkpoints=keep, git=git)
    if resume_state is not None:
        # Continue the metrics of the interrupted attempt: its best epoch so far stays the best.
        resume_state = TrainingSnapshot.coerce(resume_state)
        run.best_record = resume_state.best_record
        history = resume_state.history
        run.last_record = history[-1] if history else None
    resolved = dict(config.resolved)
    resolved["estimator"] = {**resolved["estimator"], "params": {**resolved["estimator"]["params"],
                             "random_state": run.seed, "device": str(run.estimator.device)}}
    if not (run_dir / "config_resolved.yaml").exists():
        write_yaml_atomic(run_dir / "config_resolved.yaml", resolved)
    run.events = EventLog(run_dir / "events.csv")
    with RunLogging(run_dir / "run.log", console=console, verbose=verbose):
        run.events.write(
            "run_start",
            message=f"run={run_dir.name} estimator={type(run.estimator).__name__} seed={run.seed} "
            f"resume={'yes' if resume_state is not None else 'no'} started={datetime.now(timezone.utc).isoformat()}",
        )
        logger.info("run %s: %s, seed %d, folder %s", run_dir.name, type(run.estimator).__name__, run.seed, run_dir)
        for note in config.notes:
            run.events.write("warning", message=note)
            logger.warning("%s", note)
        try:
            data = dict(dataset) if dataset is not None else load_dataset(config)
            shapes = " ".join(f"{k}={tuple(v.shape)}" for k, v in data.items())
            run.events.write("dataset", message=shapes)
            logger.info("dataset: %s", shapes)
            _fit(run, data, list(callbacks), resume_state)
            evaluation = evaluate_split(config, run.estimator, data,
                                        warn=lambda message: run.events.write("warning", message=message))
            if evaluation.equity is not None:
                # Before the final metrics.json: a run that says success has its equity curves.
                write_equity_csv(run_dir / equity_file(evaluation.split), evaluation.equity)
            run.write_metrics(RUN_SUCCESS, **evaluation.metrics)
            run.events.write("run_end", message=f"status={RUN_SUCCESS} duration_seconds={run.metrics['duration_seconds']:.2f}")
            logger.info(
                "run %s finished: val_loss=%s test_loss=%s best_epoch=%s",
                run_dir.name, run.metrics.get("val_loss"), run.metrics.get("test_loss"), run.metrics.get("best_epoch"),
            )
            return RunResult(RUN_SUCCESS, run_dir, run.metrics, EXIT_OK)
        except KeyboardInterrupt:
            run.write_metrics(RUN_INTERRUPTED, error="KeyboardInterrupt", error_kind=ERROR_INTERRUPTED)
            run.events.write("interrupted", message="interrupted by the user (Ctrl-C)")
            logger.warning("run %s interrupted", run_dir.name)
            return RunResult(RUN_INTERRUPTED, run_dir, run.metrics, EXIT_INTERRUPTED)
        except Exception as exc:  # every failure is recorded, never lost
            text = traceback.format_exc()
            kind = error_kind(exc)  # exception, non_finite (a NaN/inf loss) or out_of_memory
            run.write_metrics(RUN_ERROR, error=text, error_kind=kind)
            run.events.write("error", message=f"{type(exc).__name__}: {exc}")
            logger.error("run %s failed (%s): %s: %s", run_dir.name, kind, type(exc).__name__, exc)
            logger.debug("%s", text)
            return RunResult(RUN_ERROR, run_dir, run.metrics, EXIT_FAILURE)
        finally:
            run.events.close()


def _fit(run: _Run, data: Mapping[str, np.ndarray], callbacks: list[Callback], resume_state) -> None:
    config, est = run.config, run.estimator
    all_callbacks = [_RunRecorder(run)] + callbacks
    est.verbose = max(int(est.verbose), int(config.verbose))
    conditioning = {"conditioning": data.get("cond_train"), "conditioning_val": data.get("cond_val")}
    if config.hisso is None:
        validation = (data["X_val"], data["y_val"]) if "X_val" in data and "y_val" in data else None
        est.fit(data["X_train"], data["y_train"], validation_data=validation, callbacks=all_callbacks,
                resume_state=resume_state, **conditioning)
        _save_final_best(run)
        return
    options = config.hisso
    y = data[options.supervised.y_key] if options.supervised is not None else data.get("y_train")
    context = context_for(data, "train")
    validation = None
    if "X_val" in data:
        validation = (data["X_val"], data.get("y_val"), context_for(data, "val") if context is not None else None)
    est.fit(
        data["X_train"],
        y,
        hisso=True,
        hisso_options=options,
        context=context,
        validation_data=validation,
        callbacks=all_callbacks,
        resume_state=resume_state,
        **conditioning,
    )
    _save_final_best(run)


def _save_final_best(run: _Run) -> None:
    """Rewrite checkpoints/best from the fitted estimator, which holds the best epoch's model.

    The per-epoch snapshot is written after the epoch's callbacks ran, and schedules change the
    network there (the w0 warm-up sets the next epoch's stem w0), so during a warm-up it is not
    exactly the model that was scored. The loop's own best-epoch copy is taken before them; the
    metrics' test_loss is computed from it, so the checkpoint must be that one.
    """
    est = run.estimator
    if run.best_record is not None and getattr(est, "best_epoch_", None) == run.best_record.get("epoch"):
        est.save(run.run_dir / "checkpoints" / "best", overwrite=True)
