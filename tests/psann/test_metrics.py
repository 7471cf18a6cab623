import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from psann.metrics import (
    baseline_metrics,
    equal_weight_allocations,
    portfolio_metrics,
)

# Three steps, two assets, worked by hand below.
PRICES = np.array([[100.0, 50.0], [110.0, 40.0], [121.0, 60.0]])
ALLOCATIONS = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])


def test_portfolio_metrics_match_hand_computation_without_cost():
    # step 0: 0.5 * 1.1 + 0.5 * 0.8 = 0.95; step 1: 1.0 * 1.1 = 1.1 -> curve 1, 0.95, 1.045
    metrics = portfolio_metrics(ALLOCATIONS, PRICES)
    assert metrics["cum_return"] == pytest.approx(0.045)
    assert metrics["log_return"] == pytest.approx(math.log(1.045))
    # returns -0.05, 0.10: mean 0.025, std(ddof=1) 0.15 / sqrt(2)
    assert metrics["sharpe"] == pytest.approx(0.025 / (0.15 / math.sqrt(2)))
    assert metrics["max_drawdown"] == pytest.approx(-0.05)
    # |a1 - a0|_1 = 1, |a2 - a1|_1 = 2
    assert metrics["turnover"] == pytest.approx(1.5)


def test_portfolio_metrics_match_hand_computation_with_trans_cost():
    # growth 0.95 - 0.01 * 1 = 0.94, 1.1 - 0.01 * 2 = 1.08 -> curve 1, 0.94, 1.0152
    metrics = portfolio_metrics(ALLOCATIONS, PRICES, trans_cost=0.01)
    assert metrics["cum_return"] == pytest.approx(0.0152)
    assert metrics["log_return"] == pytest.approx(math.log(1.0152))
    assert metrics["sharpe"] == pytest.approx(0.01 / (0.14 / math.sqrt(2)))
    assert metrics["max_drawdown"] == pytest.approx(-0.06)
    assert metrics["turnover"] == pytest.approx(1.5)


def test_total_loss_gives_finite_metrics():
    # Flipping between two assets with a cost of 1 per unit of turnover loses everything each
    # step; the curve underflows to 0 but every reported number stays finite.
    allocations = np.tile(np.eye(2), (50, 1))
    metrics = portfolio_metrics(allocations, np.ones((100, 2)), trans_cost=1.0)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["cum_return"] == pytest.approx(-1.0)
    assert metrics["log_return"] == pytest.approx(99 * math.log(1e-8))
    assert metrics["max_drawdown"] == pytest.approx(-1.0)
    assert metrics["turnover"] == pytest.approx(2.0)


def test_short_positions_that_wipe_out_are_clamped_not_negative():
    allocations = np.array([[-3.0], [-3.0]])
    metrics = portfolio_metrics(allocations, np.array([[1.0], [2.0]]))
    assert metrics["log_return"] == pytest.approx(math.log(1e-8))
    assert metrics["cum_return"] > -1.0


def test_constant_prices_give_zero_return_and_zero_sharpe():
    metrics = portfolio_metrics(equal_weight_allocations(10, 3), np.full((10, 3), 7.0))
    assert metrics == {"cum_return": 0.0, "log_return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "turnover": 0.0}


def test_torch_and_numpy_inputs_give_the_same_numbers():
    from_numpy = portfolio_metrics(ALLOCATIONS, PRICES, trans_cost=0.01)
    from_torch = portfolio_metrics(torch.tensor(ALLOCATIONS, requires_grad=True), torch.tensor(PRICES), trans_cost=0.01)
    assert from_torch == pytest.approx(from_numpy)
    from_bfloat16 = portfolio_metrics(torch.full((3, 2), 0.5, dtype=torch.bfloat16), torch.tensor(PRICES))
    assert from_bfloat16 == pytest.approx(portfolio_metrics(np.full((3, 2), 0.5), PRICES))


def test_single_price_column_broadcasts_to_every_asset():
    prices = np.array([[1.0], [2.0], [1.0]])
    metrics = portfolio_metrics(np.full((3, 2), 0.5), prices)
    assert metrics == pytest.approx(portfolio_metrics(np.full((3, 2), 0.5), np.repeat(prices, 2, axis=1)))


@pytest.mark.parametrize(
    ("allocations", "prices", "match"),
    [
        (np.ones((3, 2)), np.ones((3, 3)), r"\(3, 2\).*\(3, 3\)"),
        (np.ones((3, 2)), np.ones((4, 2)), r"\(3, 2\).*\(4, 2\)"),
        (np.ones((1, 2)), np.ones((1, 2)), "T >= 2"),
        (np.ones(3), np.ones((3, 1)), "2-D"),
    ],
)
def test_portfolio_metrics_shape_errors_name_the_shapes(allocations, prices, match):
    with pytest.raises(ValueError, match=match):
        portfolio_metrics(allocations, prices)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, np.inf])
def test_bad_prices_are_rejected_with_their_index(bad):
    prices = PRICES.copy()
    prices[2, 1] = bad
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        portfolio_metrics(ALLOCATIONS, prices)


def test_baseline_metrics_report_equal_weight_and_best_single_asset():
    baselines = baseline_metrics(PRICES)
    assert baselines["equal_weight"] == pytest.approx(portfolio_metrics(equal_weight_allocations(3, 2), PRICES))
    best = baselines["best_buy_and_hold"]
    assert best["asset"] == 0  # 100 -> 121 beats 50 -> 60
    assert best["cum_return"] == pytest.approx(0.21)
    assert best["turnover"] == 0.0


def test_equal_weight_allocations_sum_to_one():
    allocations = equal_weight_allocations(4, 3)
    assert allocations.shape == (4, 3)
    np.testing.assert_allclose(allocations.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="assets"):
        equal_weight_allocations(4, 0)


def test_baseline_metrics_use_the_given_metrics_fn_and_pick_the_asset_by_cum_return():
    seen = []

    def final_weights(allocations, prices, trans_cost):
        seen.append(trans_cost)
        return {"last_weight_0": float(allocations[-1, 0])}

    baselines = baseline_metrics(PRICES, 0.01, metrics_fn=final_weights)
    assert baselines["equal_weight"] == {"last_weight_0": 0.5}
    assert baselines["best_buy_and_hold"] == {"last_weight_0": 1.0, "asset": 0}
    assert seen == [0.01, 0.01]


@st.composite
def _market(draw):
    steps = draw(st.integers(min_value=2, max_value=30))
    assets = draw(st.integers(min_value=1, max_value=4))
    prices = draw(arrays(np.float64, (steps, assets), elements=st.floats(1e-3, 1e3)))
    weights = draw(arrays(np.float64, (steps, assets), elements=st.floats(0.0, 1.0)))
    weights[:, 0] += 1e-6  # keep every row's sum positive
    allocations = weights / weights.sum(axis=1, keepdims=True)
    trans_cost = draw(st.floats(0.0, 0.1))
    return allocations, prices, trans_cost


@settings(max_examples=60, deadline=None)
@given(_market())
def test_simplex_allocations_on_positive_prices_give_finite_bounded_metrics(market):
    allocations, prices, trans_cost = market
    metrics = portfolio_metrics(allocations, prices, trans_cost)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["cum_return"] >= -1.0  # == -1.0 only once the curve is below float64 resolution
    assert -1.0 <= metrics["max_drawdown"] <= 0.0
    assert 0.0 <= metrics["turnover"] <= 2.0 + 1e-9
    assert math.exp(metrics["log_return"]) == pytest.approx(1.0 + metrics["cum_return"], rel=1e-9, abs=1e-12)
