"""A finished run's evaluation: losses on the evaluation split and the policy's metrics.

The metrics of a HISSO policy are its reward strategy's ``metrics_fn`` (DESIGN.md: a reward is a
(reward_fn, metrics_fn) bundle; the portfolio strategy's is ``psann.metrics.portfolio_metrics``),
computed from the allocations the policy really takes on the split, beside the same metrics of
the equal-weight and best buy-and-hold baselines on the same prices; and the equity curves of the
three (``psann.metrics.equity_curves``), which a run writes as ``equity_<split>.csv``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from psann.contract import EQUITY_COLUMNS
from psann.hisso import hisso_evaluate_reward, hisso_infer_series, resolve_reward
from psann.metrics import baseline_metrics, equity_curves
from psann.runconfig import RunConfig
from psann.runlog import atomic_write_text

__all__ = [
    "EvaluationResult", "context_for", "evaluate_split", "evaluate_run", "policy_metrics", "equity_rows",
    "equity_csv_text", "write_equity_csv",
]


@dataclass(frozen=True)
class EvaluationResult:
    """What evaluating a fitted estimator on one split gives.

    ``metrics`` holds the metrics.json keys it fills (``test_loss``, ``test_mse``,
    ``test_reward_full``, ``portfolio``); ``equity`` the equity curves of the policy and the
    baselines on the split (``psann.metrics.equity_curves``: EQUITY_COLUMNS -> (T,) arrays), or
    None when no portfolio metrics were computed (supervised runs, no prices).
    """

    split: str
    metrics: dict[str, Any]
    equity: dict[str, np.ndarray] | None = None

    def equity_rows(self) -> list[dict[str, Any]]:
        """The equity curves as rows ``{step, policy, equal_weight, best_buy_and_hold}`` (empty without)."""
        return equity_rows(self.equity)


def context_for(data: Mapping[str, np.ndarray], split: str) -> np.ndarray | None:
    """The reward context of a split: context_*, else prices_*, else None (inputs as prices)."""
    return data.get(f"context_{split}", data.get(f"prices_{split}"))


def evaluate_run(
    config: RunConfig,
    estimator: Any,
    data: Mapping[str, np.ndarray],
    *,
    warn: Callable[[str], None],
) -> dict[str, Any]:
    """Losses of the fitted ``estimator`` on ``config.eval_split`` and the policy's metrics.

    Returns the metrics.json keys it fills: ``test_loss``, ``test_mse``, ``test_reward_full``
    (HISSO) and ``portfolio`` (HISSO runs with the split's prices). ``warn`` receives the reason
    when portfolio metrics are skipped. ``evaluate_split`` gives the equity curves as well.
    """
    return evaluate_split(config, estimator, data, warn=warn).metrics


def evaluate_split(
    config: RunConfig,
    estimator: Any,
    data: Mapping[str, np.ndarray],
    *,
    warn: Callable[[str], None],
) -> EvaluationResult:
    """``evaluate_run``'s metrics on ``config.eval_split`` and the equity curves beside them.

    Example::

        result = evaluate_split(config, estimator, data, warn=print)
        result.metrics["test_loss"], result.equity["policy"][-1]
    """
    split = config.eval_split
    X_split = data[f"X_{split}"]
    y_split = data.get(f"y_{split}")
    cond = data.get(f"cond_{split}")  # per-sample conditioning (WaveResNet context_dim > 0)
    result: dict[str, Any] = {}
    if config.hisso is None:
        if y_split is not None:
            pred = np.asarray(estimator.predict(X_split, conditioning=cond)).reshape(y_split.shape)
            result["test_loss"] = result["test_mse"] = float(np.mean((pred - y_split) ** 2))
        return EvaluationResult(split, result)

    facts = estimator.hisso_
    window = min(config.hisso.window, X_split.shape[0])
    if window >= 2:
        context = context_for(data, split) if facts["context_source"] == "context" else None
        scores = hisso_evaluate_reward(estimator, X_split, context, window=window, conditioning=cond)
        result["test_loss"] = -scores["reward_window_mean"]
        result["test_reward_full"] = scores["reward_full"]
    if y_split is not None and y_split.shape[1] == facts["output_dim"]:
        pred = estimator.predict_tensor(X_split, conditioning=cond).cpu().numpy()
        result["test_mse"] = float(np.mean((pred - y_split) ** 2))

    prices_key = config.portfolio_prices_key
    if not prices_key:
        return EvaluationResult(split, result)  # evaluation.portfolio_prices_key: null asks for no portfolio metrics
    if prices_key not in data:
        warn(f"no {prices_key} in the dataset: portfolio metrics skipped")
        return EvaluationResult(split, result)
    allocations = hisso_infer_series(estimator, X_split, conditioning=cond)
    prices = data[prices_key]
    result["portfolio"] = policy_metrics(
        resolve_reward(facts.get("reward_spec", facts["reward"])).metrics_fn,
        allocations,
        prices,
        split=split,
        prices_key=prices_key,
        trans_cost=config.trans_cost,
    )
    # policy_metrics has checked the shapes: the curves are the same wealth its metrics describe.
    return EvaluationResult(split, result, equity_curves(allocations, prices, config.trans_cost))


def policy_metrics(
    metrics_fn: Callable[..., dict],
    allocations: np.ndarray,
    prices: np.ndarray,
    *,
    split: str,
    prices_key: str,
    trans_cost: float,
) -> dict[str, Any]:
    """``{split, trans_cost, policy, equal_weight, best_buy_and_hold}`` from ``metrics_fn``."""
    if prices.shape[0] != allocations.shape[0]:
        raise ValueError(
            f"evaluation.portfolio_prices_key: {prices_key} has {prices.shape[0]} rows but X_{split} has "
            f"{allocations.shape[0]}"
        )
    if prices.shape[1] not in (1, allocations.shape[1]):
        raise ValueError(
            f"evaluation.portfolio_prices_key: {prices_key} has shape {prices.shape}; expected "
            f"(T, {allocations.shape[1]}) to match the policy's actions"
        )
    portfolio: dict[str, Any] = {
        "split": split,
        "trans_cost": trans_cost,
        "policy": metrics_fn(allocations, prices, trans_cost),
    }
    portfolio.update(baseline_metrics(prices, trans_cost, metrics_fn=metrics_fn))
    return portfolio


def equity_rows(equity: Mapping[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Equity curves (``psann.metrics.equity_curves``) as rows keyed by EQUITY_COLUMNS."""
    if not equity:
        return []
    missing = [name for name in EQUITY_COLUMNS if name not in equity]
    if missing:
        raise ValueError(f"equity curves lack {', '.join(missing)} (expected {', '.join(EQUITY_COLUMNS)})")
    columns = [np.asarray(equity[name]) for name in EQUITY_COLUMNS]
    lengths = {len(column) for column in columns}
    if len(lengths) != 1:
        raise ValueError(f"equity curves differ in length: {dict(zip(EQUITY_COLUMNS, map(len, columns)))}")
    return [
        {"step": int(step), **{name: float(value) for name, value in zip(EQUITY_COLUMNS[1:], values)}}
        for step, *values in zip(*columns)
    ]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def equity_csv_text(equity: Mapping[str, np.ndarray] | None) -> str:
    """The CSV text of an equity file: header EQUITY_COLUMNS, one row per step, floats in full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EQUITY_COLUMNS)
    for row in equity_rows(equity):
        writer.writerow([_cell(row[name]) for name in EQUITY_COLUMNS])
    return buffer.getvalue()


def write_equity_csv(path: str | Path, equity: Mapping[str, np.ndarray]) -> Path:
    """Write ``equity_<split>.csv`` (or any equity file) atomically: temp file in the folder, then rename."""
    path = Path(path)
    atomic_write_text(path, equity_csv_text(equity))
    return path
