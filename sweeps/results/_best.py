"""The winner in hand: a stage's best trial as a fitted estimator, and its stand-alone export.

``load_best`` picks the trial by the one ranking rule (``psann.contract``: ``rank_trials`` on
``val_loss_smoothed``; with repeats, the best run of each configuration ranked by its mean, as
``summary`` names it) from the ``trials`` table, and loads it from the checkpoint the sweep's test
evaluation uses (``sweeps.evaluate.load_trial_checkpoint``: the kept Tune checkpoint with the lowest
``val_loss_smoothed``). ``export_best`` writes that estimator (its own ``save``), a run config that
reruns the trial through the run CLI, and an ``export.json`` naming what was exported.

torch and the estimators are imported only when a trial is loaded, so importing
``sweeps.results`` stays light.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from psann.contract import RANK_METRIC, rank_configurations, rank_trials
from psann.errors import ValidationError

from ._query import _config_key, _stage_order, load_trials

__all__ = ["BestTrial", "best_trial_row", "export_best", "exported_command", "load_best"]

EXPORT_FILE = "export.json"
EXPORT_CONFIG = "config.yaml"
EXPORT_CHECKPOINT = "checkpoint"
RUN_CLI = "python -m psann.scripts.hisso_log_run"


@dataclass(frozen=True)
class BestTrial:
    """Which trial ``load_best`` / ``export_best`` took, and from which checkpoint."""

    sweep: str
    stage: str
    rank: int
    trial_id: str
    trial_dir: str
    val_loss_smoothed: float | None
    checkpoint: str | None = None  # checkpoint_00000N or "best" (filled once loaded)
    checkpoint_epoch: int | None = None


def best_trial_row(sweep: str | os.PathLike, stage: str | None = None, rank: int = 1) -> dict[str, Any]:
    """The trials-table row of the ``rank``-th best trial of ``stage`` (the ranking rule).

    ``stage`` None takes the last stage the sweep ran that has a ranked trial. Raises
    ValidationError (key ``rank`` or ``stage``) when there is no such trial, FileNotFoundError
    when the sweep has no tables (run ``python -m sweeps.results ingest`` first).
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValidationError.expected("rank", "an int >= 1", rank)
    trials = load_trials(sweep)
    if RANK_METRIC not in trials.column_names:
        raise ValidationError("stage", f"the tables have no {RANK_METRIC} column (an older ingest); "
                                       f"run `python -m sweeps.results ingest` on the sweep again")
    stages = _stage_order(trials)
    if stage is not None and stage not in stages:
        raise ValidationError("stage", f"no stage {stage!r} in the tables (stages: {', '.join(stages) or 'none'})")
    ordered: dict[str, list[dict[str, Any]]] = {}
    for name in ([stage] if stage is not None else stages):
        rows = trials.filter(pc.equal(trials["stage"], name)).to_pylist()
        ordered[name] = _ranked(rows)
    if stage is None:
        with_ranked = [name for name in stages if ordered[name]]
        if not with_ranked:
            raise ValidationError("stage", f"no stage of the sweep has a ranked trial (stages: {', '.join(stages)}; "
                                           f"only SUCCESS and PRUNED trials with a finite {RANK_METRIC} rank)")
        stage = with_ranked[-1]
    ranked = ordered[stage]
    if rank > len(ranked):
        raise ValidationError("rank", f"stage {stage!r} has {len(ranked)} ranked trial(s); got rank {rank}")
    return ranked[rank - 1]


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One stage's rows best first; with repeats, each configuration's best run, by its mean."""
    for row in rows:
        row["_config"] = _config_key(row)
    configs = rank_configurations(rows, config_key="_config")
    if configs and max(entry["runs"] for entry in configs) > 1:
        return [rank_trials(entry["trials"])[0] for entry in configs if entry["runs"] > 0]
    return rank_trials(rows)


def _load(sweep: str | os.PathLike, stage: str | None, rank: int, device: str):
    from sweeps.evaluate import load_trial_checkpoint  # torch, the estimators: only now
    from sweeps.storage import SweepStore

    row = best_trial_row(sweep, stage, rank)
    store = SweepStore(_sweep_root(sweep))
    loaded = load_trial_checkpoint(store, row["stage"], row["trial_dir"], device=device)
    best = BestTrial(
        sweep=str(row.get("sweep")), stage=row["stage"], rank=rank, trial_id=row["trial_id"],
        trial_dir=row["trial_dir"], val_loss_smoothed=row.get(RANK_METRIC),
        checkpoint=loaded.checkpoint, checkpoint_epoch=loaded.epoch,
    )
    return best, loaded, row


def _sweep_root(sweep: str | os.PathLike) -> str:
    """The sweep folder (a path or URI) when given its tables/ folder."""
    text = os.fspath(sweep).rstrip("/")
    return text[: -len("/tables")] if text.endswith("/tables") else text


def load_best(sweep: str | os.PathLike, stage: str | None = None, rank: int = 1, *, device: str = "cpu") -> Any:
    """The fitted estimator of a stage's ``rank``-th best trial, loaded from its best checkpoint.

    ``sweep`` is the sweep folder (a local path or a URI such as ``s3://bucket/sweeps/x``) whose
    tables were ingested; ``stage`` None takes the last stage with a ranked trial. The estimator is
    the one the sweep's test evaluation scored, so re-evaluating it on the test split gives the
    trial's evaluation.json figures.

    Example::

        est = load_best("runs/sweeps/hisso_wave", stage="hisso")
        allocations = est.predict(X_test)
    """
    _, loaded, _ = _load(sweep, stage, rank, device)
    return loaded.estimator


def export_best(
    sweep: str | os.PathLike, out_dir: str | os.PathLike, stage: str | None = None, rank: int = 1
) -> BestTrial:
    """Write the best trial's checkpoint and a stand-alone run config into ``out_dir``.

    ``out_dir/checkpoint/`` is the estimator's ``save`` (load it with the estimator class's
    ``load``), ``out_dir/config.yaml`` the trial's config_resolved.yaml (its sampled parameters,
    seed and absolute data path included), which reproduces the trial with
    ``python -m psann.scripts.hisso_log_run --config out_dir/config.yaml``, and
    ``out_dir/export.json`` what was exported: the trial, its checkpoint, the command, the trial's
    metrics.json and evaluation.json figures and its provenance. An existing ``out_dir`` must be
    empty.
    """
    from psann.runlog import write_json_atomic, write_yaml_atomic

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValidationError("--out", f"{out} exists and is not an empty folder; pick a new one")
    best, loaded, row = _load(sweep, stage, rank, "cpu")
    out.mkdir(parents=True, exist_ok=True)
    loaded.estimator.save(out / EXPORT_CHECKPOINT)
    config = json.loads(json.dumps(loaded.config))
    write_yaml_atomic(out / EXPORT_CONFIG, config)
    threads = row.get("threads")
    # The trial's torch threads too: a CPU reduction split over other thread counts rounds differently.
    command = (f"{RUN_CLI} --config {shlex.quote(str(out / EXPORT_CONFIG))} --output-dir OUTPUT_DIR"
               + (f" --threads {int(threads)}" if isinstance(threads, int) else ""))
    record = {
        **asdict(best),
        "sweep_path": _sweep_root(sweep),
        "estimator": type(loaded.estimator).__name__,
        "checkpoint_dir": EXPORT_CHECKPOINT,
        "config": EXPORT_CONFIG,
        "command": command,
        "status": row.get("status"),
        "threads": threads,
        "seed": (config.get("estimator", {}).get("params", {}) or {}).get("random_state"),
        "metrics": {key: row.get(key) for key in ("train_loss", "val_loss", "test_loss", "val_mse", "test_mse",
                                                  "test_reward_full", "best_epoch", "epochs_run", "eval_split")},
        "evaluation": {key: row.get(f"eval_{key}") for key in ("test_loss", "test_mse", "test_reward_full")},
        "provenance": {key[len("provenance_"):]: row.get(key) for key in row if key.startswith("provenance_")},
    }
    write_json_atomic(out / EXPORT_FILE, record)
    return best


def exported_command(out_dir: str | os.PathLike, output_dir: str = "runs/exported") -> str:
    """The run CLI command line that reruns an export (export.json's, with ``output_dir``)."""
    record = json.loads((Path(out_dir) / EXPORT_FILE).read_text())
    return str(record["command"]).replace("OUTPUT_DIR", shlex.quote(output_dir))
