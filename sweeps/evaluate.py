"""The test evaluation of a stage's top trials, from their best kept Tune checkpoint.

After a stage, the sweep runner calls ``evaluate_top_trials`` with the stage's trials ranked by the
one ranking rule (``psann.contract.rank_trials``: val_loss_smoothed, pruned trials included). Each
of the first ``top_k`` is evaluated once, as a Ray task with the stage's resources:

1. its kept Tune checkpoints (``checkpoint_*`` folders in the trial folder) are matched with the
   rows of its result.json, and the one with the lowest ``val_loss_smoothed`` is picked
   (``pick_checkpoint``; the latest when no kept checkpoint has a score);
2. the checkpoint is fetched (a local store is read in place; any other pyarrow filesystem is
   copied to a temp folder), the run config is read from its config_resolved.yaml, the dataset is
   loaded, the estimator is loaded from the checkpoint's ``best/`` and then given the network
   weights of the checkpoint's training state (``training_state.pt``: the model at that epoch);
3. ``psann.evaluation.evaluate_split`` scores it on the split (``test``): losses, portfolio
   metrics and equity curves.

Steps 1 and 2 are ``load_trial_checkpoint``, which ``sweeps.results.load_best`` uses too, so the
estimator a user loads is the one the evaluation scored. Ray is imported only by the evaluation
tasks, so loading a checkpoint does not pay for it.

The driver writes ``<stage>/<trial_id>/evaluation.json`` (exactly ``psann.contract.EVALUATION_KEYS``)
and ``evaluation_equity_<split>.csv`` (``EQUITY_COLUMNS``) through the sweep store. An existing
evaluation.json is never rewritten: a resumed sweep reuses it. A failed evaluation is recorded (its
``error`` set, its figures null) and never raised. docs/run_outputs.md describes both files.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import pyarrow.fs as pafs
import yaml

from psann.contract import EVALUATION_FILE, EVALUATION_KEYS, RANK_METRIC, equity_file, finite_or_none
from sweeps.storage import SweepStore

__all__ = [
    "CHECKPOINT_PREFIX", "BEST_CHECKPOINT", "TrialCheckpoint", "pick_checkpoint", "load_checkpoint_weights",
    "load_trial_checkpoint", "evaluate_trial", "evaluate_top_trials",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Tune's checkpoint folders in a trial folder (checkpoint_000004)
BEST_CHECKPOINT = "best"  # "checkpoint" when the run's own checkpoints/best was evaluated instead
TRAINING_STATE = "training_state.pt"  # sweeps.trainable.TRAINING_STATE (not imported: it pulls in Tune)
RESULT_FILE = "result.json"  # Tune's per-report rows, one JSON object a line


def _epoch(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def pick_checkpoint(
    result_rows: Iterable[Mapping[str, Any]],
    available: Collection[str] | None = None,
) -> tuple[str, int | None, float | None] | None:
    """The checkpoint to evaluate: ``(dir_name, epoch, score)``, or None when there is none.

    ``result_rows`` are a trial's result.json rows (each with ``checkpoint_dir_name``, ``epoch``
    and ``val_loss_smoothed``); ``available`` the ``checkpoint_*`` folders Tune kept (None: every
    named one). The kept checkpoint with the lowest finite ``val_loss_smoothed`` wins (the earliest
    on ties). When no kept checkpoint has a finite score, the latest kept one is returned with
    score None (its epoch from its row, None without one).

    Example::

        pick_checkpoint([{"checkpoint_dir_name": "checkpoint_000000", "epoch": 1, "val_loss_smoothed": 0.5},
                         {"checkpoint_dir_name": "checkpoint_000001", "epoch": 2, "val_loss_smoothed": 0.3}])
        # ("checkpoint_000001", 2, 0.3)
    """
    kept = None if available is None else set(available)
    rows: dict[str, Mapping[str, Any]] = {}
    for row in result_rows:
        name = row.get("checkpoint_dir_name") if isinstance(row, Mapping) else None
        if not isinstance(name, str) or not name or (kept is not None and name not in kept):
            continue
        rows[name] = row  # a restored trial reports a checkpoint again: its last row wins
    scored = [
        (score, name) for name, row in rows.items() if (score := finite_or_none(row.get(RANK_METRIC))) is not None
    ]
    if scored:
        # Tune numbers checkpoint folders in order, so the name orders them by time.
        score, name = min(scored, key=lambda pair: (pair[0], pair[1]))
        return name, _epoch(rows[name].get("epoch")), score
    names = set(rows) | (kept or set())
    if not names:
        return None
    latest = max(names)
    return latest, _epoch(rows.get(latest, {}).get("epoch")), None


def _result_rows(store: SweepStore, stage: str, trial_id: str) -> list[dict[str, Any]]:
    text = store.read_text(stage, trial_id, RESULT_FILE) or ""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by a lost node: the others still count
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _local_copy(store: SweepStore, parts: Sequence[str], scratch: Path) -> Path:
    """A child folder of the store as a local folder: in place when local, else copied into scratch."""
    if store.is_local:
        return store.local_path(*parts)
    target = scratch / "__".join(parts)
    target.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(store.path(*parts), str(target), source_filesystem=store.fs,
                    destination_filesystem=pafs.LocalFileSystem())
    return target


def _read_config(folder: Path | None, store: SweepStore, stage: str, trial_id: str) -> dict[str, Any]:
    """The run's config_resolved.yaml: the checkpoint's copy, else the trial folder's."""
    path = folder / "config_resolved.yaml" if folder is not None else None
    text = path.read_text() if path is not None and path.is_file() else store.read_text(stage, trial_id, "config_resolved.yaml")
    if text is None:
        raise FileNotFoundError(f"no config_resolved.yaml in {folder or 'the checkpoint'} or in the trial folder "
                                f"{store.uri_of(stage, trial_id)}")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"config_resolved.yaml of {stage}/{trial_id} is not a mapping")
    return raw


def _split_config(raw: Mapping[str, Any], split: str, device: str, prices: bool):
    """The trial's run config, evaluated on ``split`` (with its prices when ``prices``) on ``device``."""
    from psann.runconfig import parse_run_config

    raw = _on_device(raw, device)
    raw["evaluation"] = {**(raw.get("evaluation") or {}), "split": split,
                         "portfolio_prices_key": f"prices_{split}" if prices else None}
    return parse_run_config(raw, base_dir=".")


def load_checkpoint_weights(estimator: Any, folder: str | Path, device: str = "cpu") -> int:
    """Give a loaded estimator the network of a Tune checkpoint's training state; returns its epoch.

    ``estimator`` is the checkpoint's ``best/`` loaded with ``estimator_cls.load``; ``folder`` the
    checkpoint folder (``training_state.pt``). The network then computes what it did when that
    epoch was validated (depth grown or cut to the state's; the stem's w0 of that epoch). Raises
    ValueError when the state does not fit the network.
    """
    folder = Path(folder)
    import torch

    from psann.snapshot import TrainingSnapshot

    snapshot = TrainingSnapshot.from_dict(torch.load(folder / TRAINING_STATE, map_location=device, weights_only=True))
    model = estimator.model_
    net = getattr(model, "net", model)
    depth = getattr(net, "depth", None)
    if snapshot.depth is not None and depth is not None and depth != snapshot.depth:
        if depth < snapshot.depth and hasattr(net, "add_blocks"):
            net.add_blocks(snapshot.depth - depth)  # progressive depth grew the net after best/
        elif depth > snapshot.depth and hasattr(net, "blocks"):
            del net.blocks[snapshot.depth:]
    try:
        model.load_state_dict(snapshot.model)
    except RuntimeError as exc:
        raise ValueError(f"{folder / TRAINING_STATE} does not fit the network of {folder / 'best'}: {exc}") from exc
    # w0 is an attribute, not a weight: a warm-up sets it per epoch; the epoch's record has the
    # value its validation ran with (the live net already holds the next epoch's).
    record = next((r for r in reversed(snapshot.history) if r.get("epoch") == snapshot.epoch), {})
    if finite_or_none(record.get("first_layer_w0")) is not None and hasattr(net, "set_first_layer_w0"):
        net.set_first_layer_w0(float(record["first_layer_w0"]))
    model.eval()
    return snapshot.epoch


def _empty(rank: int, stage: str, trial_id: str, val_loss_smoothed: Any, split: str) -> dict[str, Any]:
    evaluation: dict[str, Any] = dict.fromkeys(EVALUATION_KEYS)
    evaluation.update(rank=rank, stage=stage, trial_id=trial_id, val_loss_smoothed=finite_or_none(val_loss_smoothed),
                      split=split, evaluated_at=datetime.now(timezone.utc).isoformat())
    return evaluation


def evaluate_trial(
    store: SweepStore,
    stage: str,
    trial_id: str,
    *,
    split: str = "test",
    device: str = "cpu",
    rank: int = 1,
    val_loss_smoothed: float | None = None,
    node_id: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Evaluate one trial from its best kept checkpoint, in this process; writes nothing.

    Returns ``(evaluation, equity_csv)``: the evaluation.json object (exactly EVALUATION_KEYS) and
    the text of its equity file (None when the split has no prices or the run is supervised). A
    failure is returned as ``error`` (the traceback) with null figures, never raised.
    """
    started = time.perf_counter()
    evaluation = _empty(rank, stage, trial_id, val_loss_smoothed, split)
    evaluation.update(device=device, node_id=node_id)
    try:
        equity_text = _evaluate(store, stage, trial_id, split, device, evaluation)
    except Exception:  # recorded, never lost: the sweep goes on with the other trials
        for key in ("test_loss", "test_mse", "test_reward_full", "portfolio", "equity_file"):
            evaluation[key] = None
        evaluation["error"] = traceback.format_exc()
        logger.error("evaluation of %s/%s failed:\n%s", stage, trial_id, evaluation["error"])
        equity_text = None
    evaluation["duration_seconds"] = time.perf_counter() - started
    return {key: evaluation.get(key) for key in EVALUATION_KEYS}, equity_text


@dataclass(frozen=True)
class TrialCheckpoint:
    """A trial's fitted estimator, loaded from its best kept checkpoint (``load_trial_checkpoint``)."""

    estimator: Any  # the estimator class's load() of best/, with the checkpoint's network
    config: dict[str, Any]  # the run's config_resolved.yaml (the checkpoint's copy when it has one)
    checkpoint: str  # checkpoint_00000N, or "best" (the run's checkpoints/best)
    epoch: int | None  # the training epoch of that checkpoint
    val_loss_smoothed: float | None  # its score in result.json (None without one)


def load_trial_checkpoint(store: SweepStore, stage: str, trial_dir: str, *, device: str = "cpu") -> TrialCheckpoint:
    """Load a trial's estimator from the checkpoint its test evaluation uses; raises on failure.

    The kept ``checkpoint_*`` folder with the lowest ``val_loss_smoothed`` (``pick_checkpoint``),
    its ``best/`` loaded with the estimator class's ``load`` and given the checkpoint's network
    (``load_checkpoint_weights``); the trial's ``checkpoints/best`` when no Tune checkpoint was kept
    or its training state does not fit. A remote store is copied to a temp folder for the load.

    Example::

        loaded = load_trial_checkpoint(SweepStore("runs/sweeps/hisso_wave"), "hisso", "a1b2c_00000")
        loaded.estimator.predict(X)
    """
    from psann.runconfig import parse_run_config

    trial_uri = store.uri_of(stage, trial_dir)
    if not store.exists(stage, trial_dir):
        raise FileNotFoundError(f"no trial folder {trial_uri}")
    rows = _result_rows(store, stage, trial_dir)
    kept = [name for name in store.child_dirs(stage, trial_dir) if name.startswith(CHECKPOINT_PREFIX)]
    choice = pick_checkpoint(rows, kept)
    with tempfile.TemporaryDirectory(prefix="psann-ckpt-") as scratch:
        if choice is None:
            # No Tune checkpoint was kept: the run's own best epoch is all there is.
            logger.warning("%s has no kept Tune checkpoint; loading its checkpoints/best", trial_uri)
            best = _local_copy(store, (stage, trial_dir, "checkpoints", "best"), Path(scratch))
            raw = _read_config(None, store, stage, trial_dir)
            name, epoch, score, checkpoint = BEST_CHECKPOINT, None, None, None
        else:
            name, epoch, score = choice
            if score is None:
                logger.warning("%s: no kept checkpoint has a %s score; loading the latest, %s", trial_uri, RANK_METRIC, name)
            checkpoint = _local_copy(store, (stage, trial_dir, name), Path(scratch))
            best = checkpoint / "best"
            if not best.is_dir():  # written before the run's first best epoch: the trial folder's
                best = _local_copy(store, (stage, trial_dir, "checkpoints", "best"), Path(scratch))
            raw = _read_config(checkpoint, store, stage, trial_dir)
        estimator_cls = parse_run_config(_on_device(raw, device), base_dir=".").estimator_cls
        estimator = estimator_cls.load(best, device=device)
        if checkpoint is not None:
            try:
                epoch = load_checkpoint_weights(estimator, checkpoint, device)
            except (ValueError, FileNotFoundError) as exc:  # the state does not fit, or is missing
                logger.warning("%s: %s; using %s as it is", trial_uri, exc, best)
                estimator = estimator_cls.load(best, device=device)
                name, checkpoint = BEST_CHECKPOINT, None
    if checkpoint is None:
        epoch = getattr(estimator, "best_epoch_", None)
        row = next((r for r in reversed(rows) if r.get("epoch") == epoch), {})
        score = finite_or_none(row.get(RANK_METRIC))
    return TrialCheckpoint(estimator=estimator, config=raw, checkpoint=name, epoch=epoch, val_loss_smoothed=score)


def _on_device(raw: Mapping[str, Any], device: str) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))  # a deep copy of plain YAML data
    raw.setdefault("estimator", {}).setdefault("params", {})["device"] = device
    return raw


def _evaluate(store: SweepStore, stage: str, trial_id: str, split: str, device: str, evaluation: dict[str, Any]) -> str | None:
    from psann.evaluation import equity_csv_text, evaluate_split
    from psann.runs import load_dataset

    loaded = load_trial_checkpoint(store, stage, trial_id, device=device)
    raw, estimator = loaded.config, loaded.estimator
    config = _split_config(raw, split, device, prices=False)
    data = load_dataset(config)
    wants_prices = bool((raw.get("evaluation") or {}).get("portfolio_prices_key"))
    if wants_prices and f"prices_{split}" in data:
        config = _split_config(raw, split, device, prices=True)
    warnings: list[str] = []
    result = evaluate_split(config, estimator, data, warn=warnings.append)
    for message in warnings:
        logger.warning("%s: %s", store.uri_of(stage, trial_id), message)

    evaluation.update(
        checkpoint=loaded.checkpoint,
        checkpoint_epoch=loaded.epoch,
        checkpoint_val_loss_smoothed=loaded.val_loss_smoothed,
        test_loss=finite_or_none(result.metrics.get("test_loss")),
        test_mse=finite_or_none(result.metrics.get("test_mse")),
        test_reward_full=finite_or_none(result.metrics.get("test_reward_full")),
        portfolio=result.metrics.get("portfolio"),
        device=str(getattr(estimator, "device_", device)),
        equity_file=equity_file(split, evaluation=True) if result.equity is not None else None,
    )
    return equity_csv_text(result.equity) if result.equity is not None else None


def _evaluate_task(store_uri: str, stage: str, trial_id: str, split: str, rank: int, val_loss_smoothed: Any):
    """The Ray task: the trial evaluated on this worker's grant (CUDA when it got a GPU)."""
    import ray
    import torch

    context = ray.get_runtime_context()
    granted = context.get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(math.floor(granted))))  # workers are reused: set every task
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return evaluate_trial(SweepStore(store_uri), stage, trial_id, split=split, device=device, rank=rank,
                          val_loss_smoothed=val_loss_smoothed, node_id=context.get_node_id())


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def evaluate_top_trials(
    store: SweepStore,
    stage: str,
    ranked: Sequence[Mapping[str, Any]],
    *,
    top_k: int,
    cpu: float,
    gpu: float,
    split: str = "test",
    timeout_s: float | None = None,
) -> list[dict[str, Any]]:
    """Evaluate the first ``top_k`` of ``ranked`` on ``split``; their evaluation dicts in rank order.

    ``ranked`` holds the stage's trials best first (mappings, or objects such as
    ``sweeps.stages.TrialOutcome``, with ``trial_id`` and ``val_loss_smoothed``). A trial whose
    evaluation.json exists is not evaluated again (the file is returned as it is); the others run
    as Ray tasks with ``num_cpus=cpu, num_gpus=gpu`` (Ray must be initialised; a GPU request on a
    cluster with no GPU now runs on CPU), and the driver writes their evaluation.json and
    evaluation_equity_<split>.csv. Never raises for a failed evaluation: it is written with
    ``error`` set and null figures; ``timeout_s`` bounds the wait for each task.

    Example::

        ranked = rank_trials(result.trials, status_key="outcome")
        evaluate_top_trials(store, "hisso", ranked, top_k=3, cpu=2, gpu=1)
    """
    import ray  # here, not at import: load_trial_checkpoint (sweeps.results.load_best) needs no Ray

    chosen = list(ranked)[: max(0, int(top_k))]
    if not chosen:
        return []
    try:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0)) if gpu > 0 else 0.0
    except Exception:  # Ray not started: .remote() starts a local one, which has no GPU to wait for
        cluster_gpus = 0.0
    if gpu > 0 and cluster_gpus <= 0:
        logger.warning("stage %s: the cluster has no GPU now; its top trials are evaluated on CPU", stage)
        gpu = 0.0
    task = ray.remote(_evaluate_task)
    evaluations: list[dict[str, Any] | None] = []
    pending: dict[int, tuple[Any, dict[str, Any]]] = {}
    for index, trial in enumerate(chosen):
        rank, trial_id = index + 1, str(_field(trial, "trial_id"))
        smoothed = _field(trial, RANK_METRIC)
        if store.exists(stage, trial_id, EVALUATION_FILE):
            existing = store.read_json(stage, trial_id, EVALUATION_FILE)
            if not isinstance(existing, dict):
                logger.error("%s is unreadable; left as it is", store.uri_of(stage, trial_id, EVALUATION_FILE))
                existing = _empty(rank, stage, trial_id, smoothed, split)
                existing["error"] = f"{EVALUATION_FILE} exists but is unreadable; it was left as it is"
            else:
                logger.info("%s/%s: %s exists; not evaluated again", stage, trial_id, EVALUATION_FILE)
            evaluations.append(existing)
            continue
        failed = _empty(rank, stage, trial_id, smoothed, split)
        try:
            ref = task.options(num_cpus=cpu, num_gpus=gpu, name=f"evaluate {stage}/{trial_id}").remote(
                store.uri, stage, trial_id, split, rank, finite_or_none(smoothed))
        except Exception as exc:  # Ray refused the task (bad resources): recorded like a failure
            failed["error"] = f"the evaluation task could not start: {type(exc).__name__}: {exc}"
            ref = None
        evaluations.append(None)
        pending[index] = (ref, failed)

    for index, (ref, failed) in pending.items():
        trial_id = failed["trial_id"]
        evaluation, equity_text = failed, None
        if ref is not None:
            try:
                evaluation, equity_text = ray.get(ref, timeout=timeout_s)
            except Exception as exc:  # the worker died, the node was lost, or the wait timed out
                if isinstance(exc, ray.exceptions.GetTimeoutError):
                    ray.cancel(ref, force=True)
                failed["error"] = f"the evaluation task failed: {type(exc).__name__}: {exc}"
        if evaluation.get("error"):
            last = (str(evaluation["error"]).strip().splitlines() or ["?"])[-1]
            logger.error("evaluation of %s/%s failed: %s", stage, trial_id, last)
        if equity_text is not None and evaluation.get("equity_file"):
            try:
                store.write_text(equity_text, stage, trial_id, evaluation["equity_file"])
            except Exception as exc:
                logger.error("could not write %s: %s", store.uri_of(stage, trial_id, evaluation["equity_file"]), exc)
                evaluation["equity_file"] = None
        evaluation = {key: evaluation.get(key) for key in EVALUATION_KEYS}
        if not store.exists(stage, trial_id):  # a trial id the stage does not have: no folder is made up
            evaluations[index] = evaluation
            continue
        try:
            store.write_json(evaluation, stage, trial_id, EVALUATION_FILE)
        except Exception as exc:
            logger.error("could not write %s: %s", store.uri_of(stage, trial_id, EVALUATION_FILE), exc)
        evaluations[index] = evaluation
    return [e for e in evaluations if e is not None]
