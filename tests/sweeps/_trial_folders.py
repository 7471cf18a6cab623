"""Synthetic run and sweep folders that follow docs/run_outputs.md exactly.

Used by the results-store and compendium tests and by bench/results_scale.py.  A trial folder
looks like one Ray Tune writes (params.json, result.json, progress.csv, Tune's folder name)
plus the run contract's files (metrics.json, events.csv, config_resolved.yaml, run.log) and,
when asked, a run's equity_<split>.csv and the sweep's test evaluation (evaluation.json,
evaluation_equity_<split>.csv).
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from psann.contract import (EQUITY_COLUMNS, EVALUATION_FILE, EVALUATION_KEYS, EVENT_COLUMNS, HUNG, METRICS_KEYS,
                             UNFINISHED_STATUSES, equity_file, error_kind)

START = datetime(2026, 11, 23, 18, 0, 0, tzinfo=timezone.utc)


@dataclass
class TrialSpec:
    """One synthetic trial.  `epochs` epoch rows are written; status is metrics.json's."""

    trial_id: str
    params: dict[str, Any] = field(default_factory=lambda: {"estimator.params.lr": 1e-3})
    epochs: int = 5
    status: str = "success"  # running | success | error | interrupted
    outcome: str | None = None  # stage_status.json outcome; None leaves the trial out of it
    tune_status: str = "TERMINATED"
    seed: int = 0
    device: str = "cpu"
    amp: tuple[bool, str | None, int] = (False, None, 0)
    warm_start_epochs: int = 0
    portfolio: bool = True
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # metrics.json error_kind; None: the kind of `status` (error -> exception, interrupted, hung)
    error_kind: str | None = None
    hung_last_events: str | None = None
    tune_files: bool = True  # params.json, result.json, progress.csv
    start_seconds: float = 0.0  # offset of run_start from 2026-11-23 18:00 UTC
    losses: list[float] | None = None  # the val_loss of each epoch (sets epochs); random without
    equity_splits: tuple[str, ...] = ()  # the run's equity_<split>.csv files
    evaluation: dict[str, Any] | None = None  # evaluation.json (see evaluation_for)
    runner: dict[str, Any] = field(default_factory=dict)  # more keys of its stage_status.json entry

    def __post_init__(self) -> None:
        if self.losses is not None:
            self.epochs = len(self.losses)

    def run_error_kind(self) -> str | None:
        """metrics.json's error_kind: the one given, else the kind of the run's status."""
        return self.error_kind or error_kind(self.status)

    def outcome_error_kind(self) -> str | None:
        """stage_status.json's error_kind: hung for HUNG, the run's for other unfinished outcomes."""
        if self.outcome == HUNG:
            return "hung"
        return self.run_error_kind() if self.outcome in UNFINISHED_STATUSES else None

    def val_losses(self) -> list[float]:
        if self.losses is not None:
            return list(self.losses)
        rng = random.Random(f"{self.trial_id}-{self.seed}")
        base = 0.2 + rng.random()
        return [base * (0.85 ** e) + 0.05 * rng.random() for e in range(self.epochs)]


def tune_dir_name(spec: TrialSpec, index: int) -> str:
    tag = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(spec.params.items()))
    return f"hisso_trainable_{spec.trial_id}_{index}_{tag}_2026-11-23_18-00-{index % 60:02d}"


def metrics_for(spec: TrialSpec) -> dict[str, Any]:
    vals = spec.val_losses()
    best = min(range(len(vals)), key=vals.__getitem__) if vals else None
    rng = random.Random(spec.trial_id)
    pm = lambda: {  # noqa: E731 - a tiny local factory reads better here
        "cum_return": rng.uniform(-0.2, 0.4), "log_return": rng.uniform(-0.2, 0.3),
        "sharpe": rng.uniform(-0.1, 0.3), "max_drawdown": -rng.uniform(0, 0.3),
        "turnover": rng.uniform(0, 0.5),
    }
    metrics: dict[str, Any] = {
        "status": spec.status,
        "run_name": spec.trial_id,
        "config_path": "configs/hisso/wave_resnet_small.yaml",
        "estimator": "WaveResNetRegressor",
        "loss_kind": "neg_reward",
        "train_loss": None if best is None else vals[best] * 0.9,
        "val_loss": None if best is None else vals[best],
        "test_loss": None if best is None else vals[best] * 1.1,
        "eval_split": "test",
        "val_mse": None if best is None else vals[best] / 3,
        "test_mse": None,
        "test_reward_full": None if best is None else -vals[best] * 1.2,
        "best_epoch": None if best is None else best + 1,
        "epochs_run": spec.epochs,
        "epochs_planned": max(spec.epochs, 8),
        "reward": "portfolio",
        "reward_mean": None if best is None else -vals[-1],
        "reward_std": 0.01,
        "episodes": 32 * spec.epochs,
        "transition_penalty": 0.01,
        "device": spec.device,
        "seed": spec.seed,
        "duration_seconds": 1.5 * spec.epochs + 0.25,
        "throughput_eps_per_sec": 1000.0 + rng.random() * 100,
        "throughput_samples_per_sec": None,  # a HISSO run counts episodes
        "amp": {"enabled": spec.amp[0], "dtype": spec.amp[1], "skipped_steps": spec.amp[2]},
        "compile": {"enabled": False, "seconds": 0.0, "graphs": 0},
        "threads": 1,
        "portfolio": None if not spec.portfolio else {
            "split": "test", "trans_cost": 0.001, "policy": pm(), "equal_weight": pm(),
            "best_buy_and_hold": {**pm(), "asset": 1},
        },
        "provenance": None,
        "error_kind": spec.run_error_kind(),
        "error": spec.error,
    }
    assert set(metrics) == set(METRICS_KEYS), "synthetic metrics.json must follow the run contract"
    metrics.update(spec.extra_metrics)
    return metrics


def events_rows(spec: TrialSpec) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def add(t: float, event: str, phase: str = "", epoch: Any = "", **values: Any) -> None:
        stamp = (START + timedelta(seconds=spec.start_seconds + t)).isoformat(timespec="microseconds")
        row = [stamp, f"{t:.3f}", event, phase, epoch]
        row += [values.get(c, "") for c in EVENT_COLUMNS[5:]]
        rows.append(row)

    add(0.0, "run_start", message=f"run {spec.trial_id}, seed {spec.seed}")
    add(0.1, "dataset", message="X_train (600, 4); X_val (200, 4), prices_test (200, 3)")
    add(0.2, "shuffle_policy", message='episodes sampled at random offsets; "stateful": false')
    t = 1.0
    for e in range(spec.warm_start_epochs):
        add(t, "epoch", "warm_start", e + 1, train_loss=0.5, val_loss=0.4 - 0.01 * e, lr=1e-3)
        t += 1.0
    for e, val in enumerate(spec.val_losses()):
        add(t, "epoch", "hisso", e + 1, train_loss=f"{val * 0.9:.6f}", val_loss=f"{val:.6f}",
            reward_mean=f"{-val:.6f}", reward_std="0.01", lr="0.001", episodes=32 * (e + 1),
            episodes_per_second="1024.5", data_seconds="0.01", forward_seconds="0.02",
            backward_seconds="0.03", optimizer_seconds="0.004")
        t += 1.5
    if spec.status == "error":
        add(t, "error", message=spec.error or "RuntimeError: boom")
    elif spec.status == "success":
        add(t, "run_end", message="done")
    return rows


def write_trial(folder: Path, spec: TrialSpec) -> Path:
    """Write one trial folder; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config_resolved.yaml").write_text(
        "estimator:\n  target: psann.WaveResNetRegressor\n  params:\n    lr: 0.001\n"
        "    hidden_units: 32\nhisso:\n  window: 16\n  reward: portfolio\n"
        "data:\n  loader: psann.scripts.hisso_log_run.toy_hisso_dataset\n"
    )
    (folder / "metrics.json").write_text(json.dumps(metrics_for(spec), indent=2))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    writer.writerows(events_rows(spec))
    (folder / "events.csv").write_text(buf.getvalue())
    (folder / "run.log").write_text("DEBUG run log\n")
    if spec.tune_files:
        (folder / "params.json").write_text(json.dumps(spec.params, indent=4))
        vals = spec.val_losses()
        lines, progress = [], io.StringIO()
        pw = csv.writer(progress, lineterminator="\n")
        pw.writerow(["val_loss", "reward_mean", "episodes_per_second", "time_this_iter_s",
                     "training_iteration", "trial_id", "date", "timestamp", "time_total_s"])
        for i, val in enumerate(vals):
            rec = {"val_loss": val, "reward_mean": -val, "episodes_per_second": 1024.5,
                   "time_this_iter_s": 1.5, "training_iteration": i + 1,
                   "trial_id": spec.trial_id, "date": "2026-11-23_18-00-00",
                   "timestamp": 1795456800 + i, "time_total_s": 1.5 * (i + 1),
                   "config": spec.params}
            lines.append(json.dumps(rec))
            pw.writerow([val, -val, 1024.5, 1.5, i + 1, spec.trial_id, "2026-11-23_18-00-00",
                         1795456800 + i, 1.5 * (i + 1)])
        (folder / "result.json").write_text("".join(line + "\n" for line in lines))
        (folder / "progress.csv").write_text(progress.getvalue())
    for split in spec.equity_splits:
        write_equity(folder / equity_file(split), steps=10, seed=f"{spec.trial_id}-{split}")
    if spec.evaluation is not None:
        write_evaluation(folder, spec.evaluation)
    return folder


def logged_losses(spec: TrialSpec) -> list[float]:
    """The val_loss of each main-phase epoch as events.csv holds it (6 decimals)."""
    return [float(f"{v:.6f}") for v in spec.val_losses()]


def write_equity(path: Path, *, steps: int, seed: str) -> Path:
    """An equity CSV (psann.contract.EQUITY_COLUMNS): wealth of each strategy after each step."""
    rng = random.Random(seed)
    wealth = [1.0, 1.0, 1.0]
    lines = [",".join(EQUITY_COLUMNS)]
    for step in range(steps):
        wealth = [w * (1 + rng.uniform(-0.02, 0.03)) for w in wealth]
        lines.append(",".join([str(step)] + [repr(w) for w in wealth]))
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluation_for(spec: TrialSpec, *, stage: str, rank: int = 1, smoothed: float | None = None,
                   error: str | None = None, **changes: Any) -> dict[str, Any]:
    """A contract-complete evaluation.json for ``spec`` (every key of EVALUATION_KEYS)."""
    rng = random.Random(f"eval-{spec.trial_id}")
    pm = lambda: {  # noqa: E731
        "cum_return": rng.uniform(-0.2, 0.4), "log_return": rng.uniform(-0.2, 0.3),
        "sharpe": rng.uniform(-0.1, 0.3), "max_drawdown": -rng.uniform(0, 0.3),
        "turnover": rng.uniform(0, 0.5),
    }
    failed = error is not None
    evaluation: dict[str, Any] = {
        "rank": rank,
        "stage": stage,
        "trial_id": spec.trial_id,
        "val_loss_smoothed": smoothed,
        "checkpoint": "checkpoint_000002",
        "checkpoint_epoch": 3,
        "checkpoint_val_loss_smoothed": smoothed,
        "split": "test",
        "test_loss": None if failed else rng.uniform(0.1, 1.0),
        "test_mse": None,
        "test_reward_full": None if failed else -rng.uniform(0.1, 1.0),
        "portfolio": None if failed else {
            "split": "test", "trans_cost": 0.001, "policy": pm(), "equal_weight": pm(),
            "best_buy_and_hold": {**pm(), "asset": 2},
        },
        "equity_file": None if failed else equity_file("test", evaluation=True),
        "device": "cuda:0",
        "node_id": "node-1",
        "duration_seconds": 2.5,
        "evaluated_at": "2026-11-23T19:00:00+00:00",
        "error": error,
    }
    evaluation.update(changes)
    assert set(EVALUATION_KEYS) <= set(evaluation), "synthetic evaluation.json must follow the contract"
    return evaluation


def write_evaluation(folder: Path, evaluation: dict[str, Any]) -> Path:
    """evaluation.json, and the evaluation's equity CSV when it names one."""
    (folder / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2))
    if evaluation.get("equity_file"):
        write_equity(folder / evaluation["equity_file"], steps=8, seed=f"eval-{folder.name}")
    return folder / EVALUATION_FILE


def write_stage(stage_dir: Path, specs: list[TrialSpec], *, stage_status: bool = True,
                max_epochs: int = 8) -> list[Path]:
    """Write a Tune-like stage folder; stage_status.json lists specs that have an outcome."""
    folders = [write_trial(stage_dir / tune_dir_name(s, i), s) for i, s in enumerate(specs)]
    if stage_status:
        write_stage_status(stage_dir, specs, folders, max_epochs=max_epochs)
    return folders


def write_stage_status(stage_dir: Path, specs: list[TrialSpec], folders: list[Path], *,
                       max_epochs: int = 8) -> None:
    entries = [
        {"trial_id": s.trial_id, "trial_dir": f.name, "tune_status": s.tune_status,
         "outcome": s.outcome, "iterations": s.epochs, "node_id": "node-1",
         "error_kind": s.outcome_error_kind(), "hung_last_events": s.hung_last_events, **s.runner}
        for s, f in zip(specs, folders) if s.outcome is not None
    ]
    (stage_dir / "stage_status.json").write_text(json.dumps(
        {"stage": stage_dir.name, "max_epochs": max_epochs, "trials": entries}, indent=2))


def standard_sweep(root: Path, name: str = "hisso_wave") -> Path:
    """A small two-stage sweep: smoke (3 passes) and hisso (success, pruned, error, hung)."""
    sweep = root / name
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": name, "stages": ["smoke", "hisso"]}))
    smoke = [
        TrialSpec(f"aaaaa_{i:05d}", {"estimator.params.lr": lr, "hisso.window": 8}, epochs=2,
                  outcome="SUCCESS", seed=i)
        for i, lr in enumerate([1e-3, 3e-3, 1e-2])
    ]
    hisso = [
        TrialSpec("bbbbb_00000", {"estimator.params.lr": 1e-3, "hisso.window": 16}, epochs=8,
                  outcome="SUCCESS", device="cuda:0", amp=(True, "bfloat16", 0), warm_start_epochs=2),
        TrialSpec("bbbbb_00001", {"estimator.params.lr": 3e-3, "hisso.window": 32}, epochs=8,
                  outcome="SUCCESS", device="cuda:0", amp=(True, "float16", 3), seed=1),
        TrialSpec("bbbbb_00002", {"estimator.params.lr": 1e-2, "hisso.window": 16}, epochs=2,
                  status="running", outcome="PRUNED", device="cuda:0", seed=2),
        TrialSpec("bbbbb_00003", {"estimator.params.lr": 3e-2, "hisso.window": 32}, epochs=1,
                  status="error", outcome="ERROR", device="cuda:0", seed=3,
                  error="Traceback (most recent call last):\nRuntimeError: CUDA out of memory"),
        TrialSpec("bbbbb_00004", {"estimator.params.lr": 1e-4, "hisso.window": 64}, epochs=3,
                  status="running", outcome="HUNG", device="cuda:0", seed=4,
                  hung_last_events="epoch 3 at 18:00:07; no report for 600 s"),
    ]
    for spec in hisso:  # the GPU stage starts after the smoke stage
        spec.start_seconds = 600.0
    write_stage(sweep / "smoke", smoke, max_epochs=2)
    write_stage(sweep / "hisso", hisso, max_epochs=8)
    return sweep


def cli_runs(root: Path, names: list[str]) -> Path:
    """A plain folder of run folders as the hisso_log_run CLI writes them (no Tune files)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_trial(root / name, TrialSpec(name, epochs=3, seed=i, tune_files=False))
    return root
