"""Parameter importance: the ranking metric against each swept parameter.

Spearman's rank correlation is written out here (numpy only) so the compendium needs no scipy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from psann.contract import REPEAT_KEY

PARAM_PREFIX = "params_"
# The repeat index of a run (sweeps with repeats) is in its params but is not a parameter.
REPEAT_COLUMN = PARAM_PREFIX + REPEAT_KEY.replace(".", "__")
# A positive numeric parameter whose largest value is at least this many times its smallest is
# drawn on a log axis (a learning rate sampled log-uniformly spans decades).
LOG_RATIO = 20.0
LOG, LINEAR, CATEGORICAL = "log", "linear", "categorical"


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of their ranks.

    Example::

        average_ranks([10, 20, 20, 5])  # array([2. , 3.5, 3.5, 1. ])
    """
    array = np.asarray(values, dtype=float)
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # the rank of each group's last member
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of paired samples (average ranks for ties).

    None when it is undefined: fewer than 3 pairs, or one sample constant.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired samples, got {len(x)} x values and {len(y)} y values")
    if len(x) < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if denominator == 0.0:
        return None
    return max(-1.0, min(1.0, float((rx * ry).sum()) / denominator))


def display_name(column: str) -> str:
    """``params_estimator__params__lr`` -> ``estimator.params.lr``."""
    return column[len(PARAM_PREFIX):].replace("__", ".") if column.startswith(PARAM_PREFIX) else column


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def swept_parameters(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The params_* columns that take more than one value among ``rows``, sorted (repeat index excluded)."""
    names = sorted({k for r in rows for k in r if k.startswith(PARAM_PREFIX) and k != REPEAT_COLUMN})
    return [n for n in names if len({json.dumps(r.get(n), sort_keys=True) for r in rows}) > 1]


def parameter_kind(values: Sequence[Any]) -> str:
    """``log`` (positive numbers spanning >= LOG_RATIO), ``linear`` (other numbers) or ``categorical``."""
    present = [v for v in values if v is not None]
    if not present or not all(_number(v) and math.isfinite(v) for v in present):
        return CATEGORICAL
    low, high = min(present), max(present)
    return LOG if low > 0 and high / low >= LOG_RATIO else LINEAR


@dataclass(frozen=True)
class ParameterEffect:
    """One swept parameter against the ranking metric, over the ranked runs that set it."""

    column: str  # params_... column
    kind: str  # LOG, LINEAR or CATEGORICAL
    x: tuple[Any, ...]  # the parameter's value per ranked run
    y: tuple[float, ...]  # the ranking metric per ranked run
    statuses: tuple[str, ...]
    trial_ids: tuple[str, ...]
    distinct: int  # distinct values among all the stage's runs
    rho: float | None  # Spearman correlation (numeric parameters only)

    @property
    def name(self) -> str:
        return display_name(self.column)


def parameter_effects(rows: Sequence[dict[str, Any]], ranked: Sequence[dict[str, Any]],
                      metric: str) -> list[ParameterEffect]:
    """One entry per parameter swept among ``rows``, plotted over ``ranked`` (rows, best first).

    Sorted by the strength of the correlation (|rho| descending; categorical and undefined last),
    then by name.
    """
    effects = []
    for column in swept_parameters(rows):
        kind = parameter_kind([r.get(column) for r in rows])
        points = [r for r in ranked if r.get(column) is not None]
        x = tuple(r[column] for r in points)
        y = tuple(float(r[metric]) for r in points)
        rho = spearman(x, y) if kind != CATEGORICAL else None
        effects.append(ParameterEffect(
            column=column, kind=kind, x=x, y=y, statuses=tuple(r["status"] for r in points),
            trial_ids=tuple(str(r["trial_id"]) for r in points),
            distinct=len({json.dumps(r.get(column), sort_keys=True) for r in rows if r.get(column) is not None}),
            rho=rho))
    effects.sort(key=lambda e: (e.rho is None, -abs(e.rho) if e.rho is not None else 0.0, e.name))
    return effects
