"""Evaluation metrics: portfolio equity-curve statistics, baselines and regression scores.

This is the lowest leaf of psann: numpy only (torch tensors are accepted and converted), no
imports from the rest of the package. All arithmetic is float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "portfolio_metrics",
    "equal_weight_allocations",
    "baseline_metrics",
    "regression_metrics",
]

# A per-step standard deviation this small relative to the mean return is rounding noise of a
# constant series, not volatility; dividing by it would report an absurd Sharpe ratio.
_RELATIVE_STD_FLOOR = 1e-12


def _as_float64(value: Any, name: str) -> np.ndarray:
    """Return ``value`` (numpy array, torch tensor or array-like) as a float64 numpy array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().double().numpy()  # .double() first: numpy has no bfloat16
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; got {type(value).__name__} ({exc}).") from exc


def _first_bad_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_prices_and_allocations(allocations: Any, prices: Any) -> tuple[np.ndarray, np.ndarray]:
    alloc = _as_float64(allocations, "allocations")
    price = _as_float64(prices, "prices")
    if price.ndim == 1:
        price = price[:, None]
    if alloc.ndim != 2:
        raise ValueError(f"allocations must be 2-D (T, M); got shape {alloc.shape}.")
    if price.ndim != 2:
        raise ValueError(f"prices must be 2-D (T, M) or (T, 1); got shape {price.shape}.")
    if alloc.shape[0] != price.shape[0]:
        raise ValueError(
            "allocations and prices must have the same number of steps T; "
            f"got allocations {alloc.shape} and prices {price.shape}."
        )
    if price.shape[1] not in (1, alloc.shape[1]):
        raise ValueError(
            "prices must have one column per asset (M) or a single column to broadcast; "
            f"got allocations {alloc.shape} and prices {price.shape}."
        )
    if alloc.shape[0] < 2:
        raise ValueError(f"portfolio metrics need at least 2 steps (T >= 2); got T = {alloc.shape[0]}.")
    bad = ~np.isfinite(price) | (price <= 0)
    if bad.any():
        index = _first_bad_index(bad)
        raise ValueError(
            f"prices must be finite and > 0; got {price[index]!r} at index {index} "
            f"(prices shape {price.shape})."
        )
    bad = ~np.isfinite(alloc)
    if bad.any():
        index = _first_bad_index(bad)
        raise ValueError(f"allocations must be finite; got {alloc[index]!r} at index {index}.")
    return alloc, np.broadcast_to(price, alloc.shape)


def portfolio_metrics(
    allocations: Any,
    prices: Any,
    trans_cost: float = 0.0,
    *,
    eps: float = 1e-8,
) -> dict[str, float]:
    """Equity-curve statistics of allocations ``A`` (T, M) held against prices ``P`` (T, M).

    The curve starts at 1.0 and, for t = 0..T-2, is multiplied by
    ``max(a_t . (P_{t+1} / P_t) - trans_cost * |a_{t+1} - a_t|_1, eps)``.

    Args:
        allocations: (T, M) weights the policy actually holds (numpy array or torch tensor).
        prices: (T, M) positive price levels, or (T, 1) / (T,) broadcast to every asset.
        trans_cost: cost per unit of L1 allocation change.
        eps: floor of the per-step growth factor, so a total loss stays finite.

    Returns:
        ``cum_return`` (curve[-1] - 1), ``log_return`` (log curve[-1]), ``sharpe`` (mean / std
        with ddof=1 of per-step returns, not annualised; 0.0 when fewer than 2 finite returns or
        zero spread), ``max_drawdown`` (<= 0) and ``turnover`` (mean L1 change per step).

    Example:
        >>> portfolio_metrics([[1.0], [1.0]], [[100.0], [110.0]])["cum_return"]  # doctest: +ELLIPSIS
        0.1000...
    """
    alloc, price = _check_prices_and_allocations(allocations, prices)
    trans_cost = float(trans_cost)
    gross_ratio = price[1:] / price[:-1]  # 1 + r_{t+1}, t = 0..T-2
    change = np.abs(np.diff(alloc, axis=0)).sum(axis=1)  # |a_{t+1} - a_t|_1
    growth = np.maximum((alloc[:-1] * gross_ratio).sum(axis=1) - trans_cost * change, eps)

    # Summing logs keeps log_return finite even where the curve itself underflows to 0.
    log_curve = np.concatenate([[0.0], np.cumsum(np.log(growth))])
    curve = np.exp(log_curve)
    running_peak = np.maximum.accumulate(curve)
    drawdown = np.where(running_peak > 0, (curve - running_peak) / running_peak, 0.0)

    step_returns = growth - 1.0
    finite_returns = step_returns[np.isfinite(step_returns)]
    sharpe = 0.0
    if finite_returns.size >= 2:
        mean = float(finite_returns.mean())
        std = float(finite_returns.std(ddof=1))
        if np.isfinite(std) and std > _RELATIVE_STD_FLOOR * max(1.0, abs(mean)):
            sharpe = mean / std

    return {
        "cum_return": float(curve[-1] - 1.0),
        "log_return": float(log_curve[-1]),
        "sharpe": float(sharpe),
        "max_drawdown": float(min(drawdown.min(), 0.0)) + 0.0,  # + 0.0 turns -0.0 into 0.0
        "turnover": float(change.mean()),
    }


def equal_weight_allocations(steps: int, assets: int) -> np.ndarray:
    """Allocations of 1 / assets to every asset at every step, shape (steps, assets)."""
    for name, value in (("steps", steps), ("assets", assets)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}.")
    return np.full((int(steps), int(assets)), 1.0 / int(assets), dtype=np.float64)


def baseline_metrics(prices: Any, trans_cost: float = 0.0) -> dict[str, dict[str, float]]:
    """Portfolio metrics of the equal-weight and best single-asset buy-and-hold baselines.

    Returns ``{"equal_weight": metrics, "best_buy_and_hold": metrics | {"asset": index}}``,
    where the best buy-and-hold asset is the one with the highest cum_return (lowest index on
    ties). Both are evaluated with the same ``trans_cost`` as the policy; buy-and-hold never
    trades, so it pays none.
    """
    price = _as_float64(prices, "prices")
    if price.ndim == 1:
        price = price[:, None]
    if price.ndim != 2:
        raise ValueError(f"prices must be 2-D (T, M); got shape {price.shape}.")
    steps, assets = price.shape
    if steps < 2 or assets < 1:
        raise ValueError(f"baseline metrics need prices of shape (T >= 2, M >= 1); got {price.shape}.")
    equal_weight = portfolio_metrics(equal_weight_allocations(steps, assets), price, trans_cost)

    best: dict[str, Any] | None = None
    for asset in range(assets):
        one_hot = np.zeros((steps, assets))
        one_hot[:, asset] = 1.0
        metrics = portfolio_metrics(one_hot, price, trans_cost)
        if best is None or metrics["cum_return"] > best["cum_return"]:
            best = {**metrics, "asset": asset}
    return {"equal_weight": equal_weight, "best_buy_and_hold": best}


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Mean squared error and R^2 (as scikit-learn's r2_score, uniform average over outputs).

    For an output whose targets are constant, R^2 is 1.0 when predicted exactly and 0.0
    otherwise (scikit-learn's ``force_finite`` convention).
    """
    true = _as_float64(y_true, "y_true")
    pred = _as_float64(y_pred, "y_pred")
    if true.ndim == 1:
        true = true[:, None]
    if pred.ndim == 1:
        pred = pred[:, None]
    if true.ndim != 2 or true.shape != pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape (n,) or (n, k); "
            f"got y_true {np.shape(y_true)} and y_pred {np.shape(y_pred)}."
        )
    if true.shape[0] == 0:
        raise ValueError("regression metrics need at least one sample; got 0.")
    residual = ((true - pred) ** 2).sum(axis=0)
    total = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    r2_per_output = np.ones(true.shape[1])
    nonzero_total = total != 0
    r2_per_output[nonzero_total] = 1.0 - residual[nonzero_total] / total[nonzero_total]
    r2_per_output[~nonzero_total & (residual != 0)] = 0.0
    return {"mse": float(((true - pred) ** 2).mean()), "r2": float(r2_per_output.mean())}
