"""Evaluation metrics: portfolio equity-curve statistics and the baselines beside them.

This is the lowest leaf of psann: numpy only (torch tensors are accepted and converted), no
imports from the rest of the package. All arithmetic is float64.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = [
    "GROWTH_FLOOR",
    "EQUITY_SERIES",
    "portfolio_metrics",
    "equal_weight_allocations",
    "baseline_metrics",
    "equity_curves",
]

# The columns of equity_curves (psann.contract.EQUITY_COLUMNS names the same, for the CSV files).
EQUITY_SERIES = ("step", "policy", "equal_weight", "best_buy_and_hold")

# Floor of a portfolio's per-step growth factor (the reward's and the metrics'), so a total loss
# keeps a finite log.
GROWTH_FLOOR = 1e-8

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


def _growth(alloc: np.ndarray, price: np.ndarray, trans_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step growth factors (T-1,), L1 allocation changes (T-1,) and the log equity curve (T,).

    The one definition of a portfolio's wealth, shared by the metrics and the equity curves.
    """
    gross_ratio = price[1:] / price[:-1]  # 1 + r_{t+1}, t = 0..T-2
    change = np.abs(np.diff(alloc, axis=0)).sum(axis=1)  # |a_{t+1} - a_t|_1
    growth = np.maximum((alloc[:-1] * gross_ratio).sum(axis=1) - trans_cost * change, GROWTH_FLOOR)
    # Summing logs keeps log_return finite even where the curve itself underflows to 0.
    log_curve = np.concatenate([[0.0], np.cumsum(np.log(growth))])
    return growth, change, log_curve


def portfolio_metrics(
    allocations: Any,
    prices: Any,
    trans_cost: float = 0.0,
) -> dict[str, float]:
    """Equity-curve statistics of allocations ``A`` (T, M) held against prices ``P`` (T, M).

    The curve starts at 1.0 and, for t = 0..T-2, is multiplied by
    ``max(a_t . (P_{t+1} / P_t) - trans_cost * |a_{t+1} - a_t|_1, GROWTH_FLOOR)``.

    Args:
        allocations: (T, M) weights the policy actually holds (numpy array or torch tensor).
        prices: (T, M) positive price levels, or (T, 1) / (T,) broadcast to every asset.
        trans_cost: cost per unit of L1 allocation change.

    Returns:
        ``cum_return`` (curve[-1] - 1), ``log_return`` (log curve[-1]), ``sharpe`` (mean / std
        with ddof=1 of per-step returns, not annualised; 0.0 when fewer than 2 finite returns or
        zero spread), ``max_drawdown`` (<= 0) and ``turnover`` (mean L1 change per step).

    Example:
        >>> portfolio_metrics([[1.0], [1.0]], [[100.0], [110.0]])["cum_return"]  # doctest: +ELLIPSIS
        0.1000...
    """
    alloc, price = _check_prices_and_allocations(allocations, prices)
    growth, change, log_curve = _growth(alloc, price, float(trans_cost))
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


def baseline_metrics(
    prices: Any,
    trans_cost: float = 0.0,
    *,
    metrics_fn: Callable[..., dict] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of the equal-weight and best single-asset buy-and-hold baselines.

    Returns ``{"equal_weight": metrics, "best_buy_and_hold": metrics | {"asset": index}}``,
    where the best buy-and-hold asset is the one with the highest cum_return (lowest index on
    ties). Both are evaluated with the same ``trans_cost`` as the policy; buy-and-hold never
    trades, so it pays none.

    Args:
        metrics_fn: ``(allocations (T, M), prices (T, M), trans_cost) -> dict``, the metrics of
            the policy they are compared with (a reward strategy's ``metrics_fn``); default
            :func:`portfolio_metrics`. The best asset is always picked by its cum_return.
    """
    price = _as_float64(prices, "prices")
    if price.ndim == 1:
        price = price[:, None]
    if price.ndim != 2:
        raise ValueError(f"prices must be 2-D (T, M); got shape {price.shape}.")
    steps, assets = price.shape
    if steps < 2 or assets < 1:
        raise ValueError(f"baseline metrics need prices of shape (T >= 2, M >= 1); got {price.shape}.")
    metrics_fn = portfolio_metrics if metrics_fn is None else metrics_fn
    equal_weight = metrics_fn(equal_weight_allocations(steps, assets), price, trans_cost)

    best_asset, best_allocations = _best_buy_and_hold(price, trans_cost)
    best = {**metrics_fn(best_allocations, price, trans_cost), "asset": best_asset}
    return {"equal_weight": equal_weight, "best_buy_and_hold": best}


def _best_buy_and_hold(price: np.ndarray, trans_cost: float) -> tuple[int, np.ndarray]:
    """The asset with the highest cum_return held throughout (lowest index on ties) and its allocations."""
    steps, assets = price.shape
    best_asset, best_return, best_allocations = 0, -np.inf, None
    for asset in range(assets):
        one_hot = np.zeros((steps, assets))
        one_hot[:, asset] = 1.0
        cum_return = portfolio_metrics(one_hot, price, trans_cost)["cum_return"]
        if cum_return > best_return:
            best_asset, best_return, best_allocations = asset, cum_return, one_hot
    return best_asset, best_allocations


def equity_curves(allocations: Any, prices: Any, trans_cost: float = 0.0) -> dict[str, np.ndarray]:
    """Wealth over time of the policy, the equal-weight and the best buy-and-hold baselines.

    The same wealth as :func:`portfolio_metrics` (and costs as :func:`baseline_metrics`): every
    curve starts at 1.0 and is multiplied, step by step, by that step's growth net of transaction
    costs, so the log of each curve's last value is that strategy's ``log_return``.

    Args:
        allocations: (T, M) weights the policy actually holds (numpy array or torch tensor).
        prices: (T, M) positive price levels, or (T, 1) / (T,) broadcast to every asset.
        trans_cost: cost per unit of L1 allocation change.

    Returns:
        ``{"step": 0..T-1 (int64), "policy", "equal_weight", "best_buy_and_hold": (T,) float64}``
        (the keys of :data:`EQUITY_SERIES`, in that order): row ``t`` is the wealth at step ``t``,
        after the returns from step 0 to step ``t`` (1.0 at step 0, before any return). The best
        buy-and-hold asset is the one :func:`baseline_metrics` reports.

    Example:
        >>> equity_curves([[1.0], [1.0]], [[100.0], [110.0]])["policy"].tolist()  # doctest: +ELLIPSIS
        [1.0, 1.1000...]
    """
    alloc, price = _check_prices_and_allocations(allocations, prices)
    trans_cost = float(trans_cost)
    steps, assets = alloc.shape
    # The baselines are defined on the prices' own columns (a (T, 1) price broadcast to M
    # allocation columns is one asset), exactly as baseline_metrics sees them.
    own = _as_float64(prices, "prices")
    own = own[:, None] if own.ndim == 1 else own
    _, best_allocations = _best_buy_and_hold(own, trans_cost)
    curves: dict[str, np.ndarray] = {"step": np.arange(steps, dtype=np.int64)}
    for name, (a, p) in (
        ("policy", (alloc, price)),
        ("equal_weight", (equal_weight_allocations(steps, own.shape[1]), own)),
        ("best_buy_and_hold", (best_allocations, own)),
    ):
        curves[name] = np.exp(_growth(a, p, trans_cost)[2])
    return curves
