"""GPU spend you can predict and cap: stage budgets, epoch-time estimates and cluster prices.

A stage may set, in the sweep file::

    epoch_seconds: 4.5                          # one epoch of one trial, for the estimate
    budget: {gpu_hours: 2.0, wall_minutes: 90}  # stop launching trials past either

The estimate (``--dry-run``, and logged before each GPU stage) is an upper bound:
``trials x max epochs x epoch seconds x GPUs per trial / 3600`` GPU hours (ASHA pruning lowers
it), priced from ``estimated_cost_per_hour`` of the cluster file's GPU worker type. Epoch seconds
come from the stage's ``epoch_seconds``, else from a run of this sweep's smoke stage on disk,
else the estimate says they are unknown and how to get them.

The accounting the budget is checked against is :class:`BudgetMeter`: GPU hours are the sum over
the stage's trials of their wall time while running times the GPUs each holds, wall minutes the
stage's own running time. The Ray side (stopping launches) is ``sweeps.budget_guard``; this module
imports neither Ray nor torch, so ``--dry-run`` and the sweep-file parser stay light.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import yaml

from psann.contract import MAIN_PHASES
from psann.errors import ValidationError, short_repr, unknown_key

if TYPE_CHECKING:  # pragma: no cover - typing only (sweeps.spec imports this module)
    from sweeps.spec import StageSpec, SweepSpec
    from sweeps.storage import SweepStore

__all__ = [
    "BUDGET_KEYS",
    "BUDGET_RECORD",
    "BudgetMeter",
    "BudgetSpec",
    "EpochTime",
    "GpuPrice",
    "StageEstimate",
    "describe_estimates",
    "epoch_time_for",
    "estimate_stage",
    "find_smoke_epoch_seconds",
    "load_gpu_price",
    "measure_epoch_seconds",
    "parse_budget",
    "parse_epoch_seconds",
    "smoke_stage",
    "stage_max_epochs",
]

BUDGET_KEYS = ("gpu_hours", "wall_minutes")
BUDGET_RECORD = "budget.json"  # <stage>/budget.json: what the stage spent, written while it runs


def _positive(value: Any, key: str, error: type[ValidationError]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise error.expected(key, "a number > 0", value)
    return float(value)


@dataclass(frozen=True)
class BudgetSpec:
    """A stage's spending cap; None means no cap on that quantity."""

    gpu_hours: float | None = None  # sum over trials of running wall time x GPUs per trial
    wall_minutes: float | None = None  # the stage's own running time

    def to_json(self) -> dict[str, float | None]:
        return {"gpu_hours": self.gpu_hours, "wall_minutes": self.wall_minutes}


def parse_budget(value: Any, key: str, *, gpus_per_trial: float,
                 error: type[ValidationError] = ValidationError) -> BudgetSpec | None:
    """The ``budget`` section of a stage (None when absent); ``key`` is its key path."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise error.expected(key, "a mapping {gpu_hours: H, wall_minutes: M}", value)
    for k in value:
        if k not in BUDGET_KEYS:
            raise unknown_key(k, BUDGET_KEYS, key, error=error)
    if not value:
        raise error(key, "expected gpu_hours, wall_minutes or both, got an empty mapping")
    gpu_hours = value.get("gpu_hours")
    wall_minutes = value.get("wall_minutes")
    budget = BudgetSpec(
        gpu_hours=None if gpu_hours is None else _positive(gpu_hours, f"{key}.gpu_hours", error),
        wall_minutes=None if wall_minutes is None else _positive(wall_minutes, f"{key}.wall_minutes", error),
    )
    if budget.gpu_hours is not None and gpus_per_trial <= 0:
        # A CPU-only stage spends no GPU hours: that cap could never stop it.
        raise error(f"{key}.gpu_hours", "the stage asks for no GPU (resources.gpu: 0), so it spends no GPU "
                    "hours; cap it with wall_minutes")
    return budget


def parse_epoch_seconds(value: Any, key: str, error: type[ValidationError] = ValidationError) -> float | None:
    """A stage's ``epoch_seconds`` (None when absent)."""
    return None if value is None else _positive(value, key, error)


# -- accounting ------------------------------------------------------------------------------------


class BudgetMeter:
    """What a stage has spent: trial running time x GPUs, and the stage's own running time.

    The caller feeds it the set of running trials at each controller step (``observe``) and trial
    ends as they happen (``end``); times are from one monotonic clock. Spending carried over from an
    earlier driver (``--resume``) starts the totals.

    Example::

        meter = BudgetMeter(BudgetSpec(gpu_hours=1.0), gpus_per_trial=1)
        meter.observe({"t1", "t2"}, now=0.0)
        meter.observe({"t1", "t2"}, now=1800.0)
        meter.exhausted_by(1800.0)   # "gpu_hours": 2 trials x 0.5 h x 1 GPU
    """

    def __init__(self, budget: BudgetSpec, gpus_per_trial: float, *, gpu_seconds: float = 0.0,
                 wall_seconds: float = 0.0) -> None:
        self.budget = budget
        self.gpus_per_trial = float(gpus_per_trial)
        self._closed_trial_seconds = 0.0  # running time of trials that have ended
        self._carried_gpu_seconds = float(gpu_seconds)
        self._carried_wall_seconds = float(wall_seconds)
        self._running: dict[str, float] = {}  # trial id -> when this driver first saw it running
        self._started: float | None = None  # first observation of this driver

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

    def observe(self, running: Iterable[str], now: float) -> None:
        """Record which trials are running now: new ones start their clock, missing ones end."""
        if self._started is None:
            self._started = now
        running = set(running)
        for trial_id in list(self._running):
            if trial_id not in running:
                self.end(trial_id, now)
        for trial_id in running:
            self._running.setdefault(trial_id, now)

    def end(self, trial_id: str, now: float) -> None:
        """A trial stopped running (finished, stopped, errored or paused)."""
        started = self._running.pop(trial_id, None)
        if started is not None:
            self._closed_trial_seconds += max(0.0, now - started)

    def trial_seconds(self, now: float) -> float:
        """Running time of this driver's trials, summed (ended and still running)."""
        return self._closed_trial_seconds + sum(max(0.0, now - t) for t in self._running.values())

    def gpu_hours(self, now: float) -> float:
        return (self._carried_gpu_seconds + self.trial_seconds(now) * self.gpus_per_trial) / 3600.0

    def wall_minutes(self, now: float) -> float:
        ran = 0.0 if self._started is None else max(0.0, now - self._started)
        return (self._carried_wall_seconds + ran) / 60.0

    def exhausted_by(self, now: float) -> str | None:
        """``gpu_hours`` or ``wall_minutes`` when that cap is reached, else None."""
        if self.budget.gpu_hours is not None and self.gpus_per_trial > 0 and self.gpu_hours(now) >= self.budget.gpu_hours:
            return "gpu_hours"
        if self.budget.wall_minutes is not None and self.wall_minutes(now) >= self.budget.wall_minutes:
            return "wall_minutes"
        return None

    def spent(self, now: float) -> dict[str, float]:
        return {"spent_gpu_hours": self.gpu_hours(now), "spent_wall_minutes": self.wall_minutes(now)}


# -- estimates ---------------------------------------------------------------------------------------


def stage_max_epochs(spec: "SweepSpec", stage: "StageSpec") -> int | None:
    """The most epochs one trial of the stage runs: ASHA's max_t, else the stage's epochs, else the
    run config's (a stage override, else the base config)."""
    if stage.scheduler.kind == "asha" and stage.scheduler.max_t is not None:
        return stage.scheduler.max_t
    if stage.epochs is not None:
        return stage.epochs
    epochs = stage.overrides.get("estimator.params.epochs")
    if epochs is None:
        params = (spec.base_config.get("estimator") or {}).get("params") or {}
        epochs = params.get("epochs") if isinstance(params, Mapping) else None
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def smoke_stage(spec: "SweepSpec") -> "StageSpec | None":
    """The sweep's smoke stage: its first stage that asks for no GPU (None when every stage does)."""
    return next((s for s in spec.stages if not s.wants_gpu), None)


def _trial_epoch_seconds(events_text: str) -> float | None:
    """Mean seconds per main-phase epoch of one events.csv: from the row before its first epoch row
    (training starts) to its last epoch row, over the epochs between."""
    rows = list(csv.DictReader(io.StringIO(events_text)))
    epochs = [i for i, r in enumerate(rows) if r.get("event") == "epoch" and r.get("phase") in MAIN_PHASES]
    if not epochs or epochs[0] == 0:
        return None
    try:
        start = float(rows[epochs[0] - 1]["elapsed_seconds"])
        end = float(rows[epochs[-1]]["elapsed_seconds"])
    except (KeyError, TypeError, ValueError):
        return None
    seconds = (end - start) / len(epochs)
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def measure_epoch_seconds(store: "SweepStore", stage_name: str) -> float | None:
    """The median seconds per epoch over a finished stage's trials (their events.csv), or None."""
    status = store.read_json(stage_name, "stage_status.json")
    if not isinstance(status, dict):
        return None
    measured = []
    for trial in status.get("trials") or []:
        folder = trial.get("trial_dir") if isinstance(trial, dict) else None
        text = store.read_text(stage_name, folder, "events.csv") if folder else None
        seconds = _trial_epoch_seconds(text) if text else None
        if seconds is not None:
            measured.append(seconds)
    return statistics.median(measured) if measured else None


def find_smoke_epoch_seconds(storage: "SweepStore", sweep_name: str, smoke: str,
                             prefer: str | None = None) -> tuple[float, str] | None:
    """Seconds per epoch measured by a finished smoke stage of this sweep under ``storage``.

    ``prefer`` (a sweep folder name, e.g. ``--name``) is tried first, then the folders of this
    sweep newest first (their names end in a UTC timestamp). Returns (seconds, folder uri) or None.
    """
    from sweeps.storage import SweepStore

    names = [n for n in storage.child_dirs() if n.startswith(f"{sweep_name}-")]
    candidates = ([prefer] if prefer else []) + sorted(names, reverse=True)
    for name in dict.fromkeys(candidates):
        folder = SweepStore(storage.uri_of(name))
        seconds = measure_epoch_seconds(folder, smoke)
        if seconds is not None:
            return seconds, folder.uri_of(smoke)
    return None


@dataclass(frozen=True)
class EpochTime:
    """Seconds per epoch of one trial and where the figure comes from (None: unknown)."""

    seconds: float | None
    source: str


def epoch_time_for(stage: "StageSpec", measured: tuple[float, str] | None) -> EpochTime:
    """The stage's ``epoch_seconds`` from the sweep file, else the smoke stage's measurement."""
    if stage.epoch_seconds is not None:
        return EpochTime(stage.epoch_seconds, "sweep file")
    if measured is not None:
        return EpochTime(measured[0], f"measured by the smoke stage in {measured[1]}")
    return EpochTime(None, "unknown")


@dataclass(frozen=True)
class GpuPrice:
    """What one GPU-hour costs on a cluster file's GPU worker node type."""

    path: str
    node_type: str
    cost_per_hour: float  # one pod of node_type
    gpus_per_node: float
    head_cost_per_hour: float | None = None

    @property
    def per_gpu_hour(self) -> float:
        return self.cost_per_hour / self.gpus_per_node


def _cost(value: Any, key: str, path: str, error: type[ValidationError]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise error(key, f"expected a number >= 0 (dollars per hour) in {path}, got {short_repr(value)}")
    return float(value)


def load_gpu_price(path: str | Path, error: type[ValidationError] = ValidationError) -> GpuPrice:
    """The GPU worker price of a Ray cluster-launcher file (``cluster/runpod.yaml``).

    Reads ``available_node_types.<type>.estimated_cost_per_hour`` (or, as in the shipped file,
    ``node_config.estimated_cost_per_hour``) of the node types other than the head whose
    ``resources.GPU`` is > 0; with several, the dearest per GPU (an upper bound). Errors are keyed
    ``--cluster`` (a missing or unreadable file) or by the key path in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise error("--cluster", f"cluster file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error("--cluster", f"cannot read {path} as YAML: {exc}") from exc
    if not isinstance(raw, Mapping) or not isinstance(raw.get("available_node_types"), Mapping):
        raise error("available_node_types", f"{path} has no mapping of node types (is it a Ray cluster file?)")
    head = raw.get("head_node_type")
    prices: list[GpuPrice] = []
    head_cost = None
    for name, node in raw["available_node_types"].items():
        key = f"available_node_types.{name}"
        if not isinstance(node, Mapping):
            raise error(key, f"expected a mapping in {path}, got {short_repr(node)}")
        node_config = node.get("node_config") if isinstance(node.get("node_config"), Mapping) else {}
        cost_key, cost = "estimated_cost_per_hour", node.get("estimated_cost_per_hour")
        if cost is None:
            cost_key, cost = "node_config.estimated_cost_per_hour", node_config.get("estimated_cost_per_hour")
        if name == head:
            head_cost = None if cost is None else _cost(cost, f"{key}.{cost_key}", str(path), error)
            continue
        resources = node.get("resources") if isinstance(node.get("resources"), Mapping) else {}
        gpus = resources.get("GPU", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus <= 0:
            continue
        if cost is None:
            raise error(f"{key}.node_config.estimated_cost_per_hour",
                        f"missing in {path}: the GPU worker type needs its price per pod-hour for a cost estimate")
        prices.append(GpuPrice(str(path), str(name), _cost(cost, f"{key}.{cost_key}", str(path), error), float(gpus)))
    if not prices:
        raise error("available_node_types", f"{path} has no worker node type with resources.GPU > 0")
    dearest = max(prices, key=lambda p: p.per_gpu_hour)
    return GpuPrice(dearest.path, dearest.node_type, dearest.cost_per_hour, dearest.gpus_per_node, head_cost)


@dataclass(frozen=True)
class StageEstimate:
    """The upper-bound spend of one stage: every trial runs its max epochs."""

    stage: str
    trials: int
    max_epochs: int | None
    gpus_per_trial: float
    epoch: EpochTime
    budget: BudgetSpec | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def trial_hours(self) -> float | None:
        if self.epoch.seconds is None or self.max_epochs is None:
            return None
        return self.trials * self.max_epochs * self.epoch.seconds / 3600.0

    @property
    def gpu_hours(self) -> float | None:
        hours = self.trial_hours
        return None if hours is None else hours * self.gpus_per_trial

    def cost(self, price: GpuPrice | None) -> float | None:
        hours = self.gpu_hours
        return None if hours is None or price is None else hours * price.per_gpu_hour


def estimate_stage(spec: "SweepSpec", stage: "StageSpec", measured: tuple[float, str] | None = None) -> StageEstimate:
    """The stage's upper-bound estimate (``measured``: the smoke stage's seconds per epoch, folder)."""
    return StageEstimate(
        stage=stage.name,
        trials=spec.trial_count(stage),
        max_epochs=stage_max_epochs(spec, stage),
        gpus_per_trial=stage.gpu,
        epoch=epoch_time_for(stage, measured),
        budget=stage.budget,
    )


def describe_estimates(estimates: Iterable[StageEstimate], price: GpuPrice | None = None,
                       smoke: str | None = None) -> list[str]:
    """Plan lines: per stage the GPU-hour upper bound (and its cost with a price), and the total."""
    lines: list[str] = []
    total_hours, total_known = 0.0, True
    for est in estimates:
        epochs = est.max_epochs if est.max_epochs is not None else "?"
        if est.epoch.seconds is None and est.gpus_per_trial == 0:
            figure = "CPU only, no GPU hours (trial time unknown)"
        elif est.epoch.seconds is None:
            how = (f"set stages.{est.stage}.epoch_seconds in the sweep file, or run the smoke stage first "
                   f"(--stages {smoke}) and dry-run again" if smoke else
                   f"set stages.{est.stage}.epoch_seconds in the sweep file")
            figure = f"unknown: no epoch time ({how})"
            total_known = False
        else:
            per = f"{est.epoch.seconds:.3g} s ({est.epoch.source})"
            if est.gpus_per_trial > 0:
                hours = est.gpu_hours or 0.0
                total_hours += hours
                figure = (f"<= {hours:.3g} GPU h = {est.trials} trials x {epochs} epochs x {per} x "
                          f"{est.gpus_per_trial:g} GPU / 3600")
                cost = est.cost(price)
                if cost is not None:
                    figure += f"; <= ${cost:.2f} at ${price.per_gpu_hour:.2f}/GPU-h ({price.node_type})"
            else:
                figure = f"CPU only, <= {est.trial_hours or 0.0:.3g} trial-hours = {est.trials} trials x {epochs} epochs x {per}"
        if est.budget is not None:
            caps = [f"{v:g} {k.replace('_', ' ')}" for k, v in est.budget.to_json().items() if v is not None]
            figure += f"; budget: {', '.join(caps)}"
        lines.append(f"estimate {est.stage}: {figure}")
    if total_known:
        line = f"estimate total: <= {total_hours:.3g} GPU h"
        if price is not None:
            line += f", <= ${total_hours * price.per_gpu_hour:.2f} on {price.node_type} pods"
        lines.append(line + " (an upper bound: every trial runs its max epochs; ASHA pruning lowers it)")
    else:
        lines.append("estimate total: unknown (a GPU stage has no epoch time); an upper bound once known, "
                     "ASHA pruning lowers it")
    if price is not None and price.head_cost_per_hour is not None:
        lines.append(f"plus the head pod: ${price.head_cost_per_hour:.2f}/h for as long as the cluster is up ({price.path})")
    return lines
