"""The ranking columns of a trial row: val_loss_smoothed, config_id and repeat.

The ranking rule is the run contract's (psann.contract: RANK_METRIC, smoothed_loss, config_id,
REPEAT_KEY). The values are derived from the trial's own files the way the sweep runner derives
them, and the runner's values in stage_status.json win when present, as its outcome does; a
disagreement between the two is an ingest note.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from psann import contract as C

from . import _schema as S


def configuration(params: dict | None, runner: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """config_id and repeat: from params.json; the runner's stage_status.json entry wins."""
    config_id = None if params is None else C.config_id(params)
    repeat = 0
    if params is not None and C.REPEAT_KEY in params:
        repeat, note = S.coerce_known(params[C.REPEAT_KEY], S.I64)
        if note or repeat is None:
            notes.append(f"params.json {C.REPEAT_KEY}: {note or 'is null'}; repeat 0 assumed")
            repeat = 0
    runner_id, runner_repeat = runner.get("config_id"), runner.get("repeat")
    if isinstance(runner_id, str) and runner_id:
        if config_id is not None and runner_id != config_id:
            notes.append(f"stage_status.json config_id {runner_id!r} differs from {config_id!r} of "
                         f"params.json; the runner's kept")
        config_id = runner_id
    if isinstance(runner_repeat, int) and not isinstance(runner_repeat, bool):
        if params is not None and runner_repeat != repeat:
            notes.append(f"stage_status.json repeat {runner_repeat} differs from {repeat} of "
                         f"params.json; the runner's kept")
        repeat = runner_repeat
    return {"config_id": config_id, "repeat": repeat}


def ranking_value(
    events: pa.Table | None, window: int, runner: dict[str, Any], notes: list[str]
) -> float | None:
    """val_loss_smoothed: the runner's value from stage_status.json, else computed from events.csv.

    Computed as the trainable reports it to Tune: psann.contract.smoothed_loss over the main-phase
    epoch rows' val_loss (a restored trial's epochs logged twice count once, by the later row), or
    their train_loss when the run logged no val_loss at all (no validation split).
    """
    computed = _smoothed_from_events(events, window)
    if C.RANK_METRIC not in runner:
        return computed
    value = runner[C.RANK_METRIC]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        notes.append(f"stage_status.json {C.RANK_METRIC} {value!r} is not a number; "
                     f"the value from events.csv kept")
        return computed
    # A diverged window is reported to Tune as inf: not ranked, like null.
    value = float(value) if value is not None and math.isfinite(value) else None
    if events is not None and not _agree(value, computed):
        notes.append(f"stage_status.json {C.RANK_METRIC} {value!r} differs from {computed!r} "
                     f"computed from events.csv (window {window}); the runner's kept")
    return value


def _agree(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _smoothed_from_events(events: pa.Table | None, window: int) -> float | None:
    if events is None or events.num_rows == 0:
        return None
    kinds, phases = events["event"].to_pylist(), events["phase"].to_pylist()
    epochs = events["epoch"].to_pylist()
    kept: list[tuple[str, int | None, int]] = []  # (phase, epoch, row)
    for i, (kind, phase, epoch) in enumerate(zip(kinds, phases, epochs)):
        if kind != "epoch" or phase not in C.MAIN_PHASES:
            continue
        # A trial restored from a checkpoint logs the epochs after it again: the rows of the
        # abandoned attempt from that epoch on no longer count.
        while epoch is not None and kept and kept[-1][0] == phase and (kept[-1][1] or 0) >= epoch:
            kept.pop()
        kept.append((phase, epoch, i))
    rows = [i for _, _, i in kept]
    if not rows:
        return None
    values = [events["val_loss"][i].as_py() for i in rows]
    if all(v is None for v in values):  # no validation split: the training loop monitors train_loss
        values = [events["train_loss"][i].as_py() for i in rows]
    return C.smoothed_loss(values, window)
