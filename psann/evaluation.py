"""A finished run's evaluation: losses on the evaluation split and the policy's metrics.

The metrics of a HISSO policy are its reward strategy's ``metrics_fn`` (DESIGN.md: a reward is a
(reward_fn, metrics_fn) bundle; the portfolio strategy's is ``psann.metrics.portfolio_metrics``),
computed from the allocations the policy really takes on the split, beside the same metrics of
the equal-weight and best buy-and-hold baselines on the same prices.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from psann.hisso import hisso_evaluate_reward, hisso_infer_series, resolve_reward
from psann.metrics import baseline_metrics
from psann.runconfig import RunConfig

__all__ = ["context_for", "evaluate_run", "policy_metrics"]


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
    when portfolio metrics are skipped.
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
        return result

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
        return result  # evaluation.portfolio_prices_key: null asks for no portfolio metrics
    if prices_key not in data:
        warn(f"no {prices_key} in the dataset: portfolio metrics skipped")
        return result
    result["portfolio"] = policy_metrics(
        resolve_reward(facts.get("reward_spec", facts["reward"])).metrics_fn,
        hisso_infer_series(estimator, X_split, conditioning=cond),
        data[prices_key],
        split=split,
        prices_key=prices_key,
        trans_cost=config.trans_cost,
    )
    return result


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
