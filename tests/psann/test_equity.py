"""Equity curves: psann.metrics.equity_curves and the equity_<split>.csv a HISSO run writes."""

import math

import numpy as np
import pyarrow.csv as pacsv
import pytest

from psann.contract import EQUITY_COLUMNS, equity_file
from psann.evaluation import equity_csv_text, equity_rows, write_equity_csv
from psann.metrics import EQUITY_SERIES, baseline_metrics, equity_curves, portfolio_metrics
from psann.runconfig import parse_run_config
from psann.runs import execute_run, load_dataset, prepare_run_dir


def tiny_config(**dotted):
    """A HISSO run that trains in well under a second (the toy market, 120 steps)."""
    raw = {
        "estimator": {"target": "psann.PSANNRegressor",
                      "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 2, "w0": 1.0, "device": "cpu"}},
        "hisso": {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio",
                  "val_episodes": 8, "transition_penalty": 0.001},
        "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 120}},
        "training": {"verbose": 0},
        "evaluation": {"trans_cost": 0.002},
    }
    for path, value in dotted.items():
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def read_equity(path):
    table = pacsv.read_csv(path)
    assert tuple(table.column_names) == EQUITY_COLUMNS
    return table.to_pydict()


def market(steps=60, assets=3, seed=0):
    rng = np.random.default_rng(seed)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (steps, assets)), axis=0))
    allocations = rng.dirichlet(np.ones(assets), steps)
    return allocations, prices


# -- the series ---------------------------------------------------------------------------------------

def test_equity_series_names_are_the_contracts_columns():
    assert EQUITY_SERIES == EQUITY_COLUMNS
    allocations, prices = market()
    assert tuple(equity_curves(allocations, prices)) == EQUITY_COLUMNS


@pytest.mark.parametrize("trans_cost", [0.0, 0.003])
def test_last_row_log_is_the_log_return_of_portfolio_and_baseline_metrics(trans_cost):
    allocations, prices = market()
    curves = equity_curves(allocations, prices, trans_cost)
    policy = portfolio_metrics(allocations, prices, trans_cost)
    baselines = baseline_metrics(prices, trans_cost)
    assert curves["step"].tolist() == list(range(60))
    for name in EQUITY_COLUMNS[1:]:
        assert curves[name].shape == (60,) and curves[name][0] == 1.0
    assert math.log(curves["policy"][-1]) == pytest.approx(policy["log_return"], rel=1e-12, abs=1e-15)
    assert curves["policy"][-1] - 1.0 == pytest.approx(policy["cum_return"], rel=1e-12, abs=1e-15)
    for name in ("equal_weight", "best_buy_and_hold"):
        assert math.log(curves[name][-1]) == pytest.approx(baselines[name]["log_return"], rel=1e-12, abs=1e-15)
    # The drawdown of the curve is the metrics' max_drawdown: the same wealth, step by step.
    peak = np.maximum.accumulate(curves["policy"])
    assert float(((curves["policy"] - peak) / peak).min()) == pytest.approx(policy["max_drawdown"], abs=1e-12)


def test_wealth_by_hand_with_costs_and_the_best_asset_held():
    prices = np.array([[100.0, 50.0], [110.0, 50.0], [99.0, 60.0]])
    allocations = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    curves = equity_curves(allocations, prices, trans_cost=0.01)
    # Step 1: all in asset 0 (+10%), then a switch costing 0.01 * |change|_1 = 0.02.
    # Step 2: all in asset 1 (+20%), no change.
    assert curves["policy"].tolist() == pytest.approx([1.0, 1.1 - 0.02, (1.1 - 0.02) * 1.2])
    assert curves["equal_weight"].tolist() == pytest.approx([1.0, 1.05, 1.05 * (0.5 * 0.9 + 0.5 * 1.2)])
    # Buy-and-hold of asset 1 (+20%) beats asset 0 (-1%); it never trades, so it pays nothing.
    assert curves["best_buy_and_hold"].tolist() == pytest.approx([1.0, 1.0, 1.2])
    assert baseline_metrics(prices, 0.01)["best_buy_and_hold"]["asset"] == 1


def test_single_price_column_is_one_asset_for_the_baselines_as_in_baseline_metrics():
    allocations, prices = market(assets=2)
    one = prices[:, :1]
    curves = equity_curves(allocations, one, 0.001)
    baselines = baseline_metrics(one, 0.001)
    assert math.log(curves["equal_weight"][-1]) == pytest.approx(baselines["equal_weight"]["log_return"], rel=1e-12)
    assert math.log(curves["policy"][-1]) == pytest.approx(portfolio_metrics(allocations, one, 0.001)["log_return"])


def test_bad_inputs_are_refused_with_their_shapes():
    allocations, prices = market()
    with pytest.raises(ValueError, match="same number of steps"):
        equity_curves(allocations[:-1], prices)
    bad = prices.copy()
    bad[3, 1] = -1.0
    with pytest.raises(ValueError, match=r"finite and > 0.*index \(3, 1\)"):
        equity_curves(allocations, bad)


def test_csv_text_round_trips_exactly_and_the_write_leaves_no_temp_file(tmp_path):
    allocations, prices = market(steps=12)
    curves = equity_curves(allocations, prices, 0.001)
    path = write_equity_csv(tmp_path / equity_file("test"), curves)
    assert path.name == "equity_test.csv" and sorted(p.name for p in tmp_path.iterdir()) == ["equity_test.csv"]
    table = read_equity(path)
    assert table["step"] == list(range(12))
    for name in EQUITY_COLUMNS[1:]:
        assert table[name] == curves[name].tolist()  # full precision: repr of every float
    assert equity_rows(curves)[0] == {"step": 0, "policy": 1.0, "equal_weight": 1.0, "best_buy_and_hold": 1.0}
    assert equity_csv_text(None) == ",".join(EQUITY_COLUMNS) + "\n"
    with pytest.raises(ValueError, match="lack policy"):
        equity_rows({"step": np.arange(3)})


# -- what a run writes ----------------------------------------------------------------------------------

def test_a_hisso_run_writes_the_equity_of_its_eval_split_ending_at_its_portfolio_log_returns(tmp_path):
    config = parse_run_config(tiny_config())
    result = execute_run(config, prepare_run_dir(tmp_path, "r"), seed=0)
    assert result.status == "success", result.metrics["error"]
    path = result.run_dir / equity_file("test")
    assert path.is_file()
    table = read_equity(path)
    steps = load_dataset(config)["X_test"].shape[0]
    assert table["step"] == list(range(steps))
    portfolio = result.metrics["portfolio"]
    assert portfolio["split"] == "test" and portfolio["trans_cost"] == 0.002
    for name in EQUITY_COLUMNS[1:]:
        assert table[name][0] == 1.0
        assert math.log(table[name][-1]) == pytest.approx(portfolio[name]["log_return"], rel=1e-9, abs=1e-12)


def test_the_equity_file_is_named_by_the_eval_split(tmp_path):
    raw = tiny_config(**{"evaluation.split": "val", "evaluation.portfolio_prices_key": "prices_val"})
    result = execute_run(parse_run_config(raw), prepare_run_dir(tmp_path, "r"), seed=0)
    assert result.status == "success", result.metrics["error"]
    assert not (result.run_dir / "equity_test.csv").exists()
    table = read_equity(result.run_dir / "equity_val.csv")
    assert math.log(table["policy"][-1]) == pytest.approx(result.metrics["portfolio"]["policy"]["log_return"], rel=1e-9)


def test_runs_without_portfolio_metrics_write_no_equity_file(tmp_path):
    supervised = tiny_config(**{"hisso": {"enabled": False}})
    no_prices = tiny_config(**{"evaluation.portfolio_prices_key": None})
    for name, raw in (("supervised", supervised), ("no_prices", no_prices)):
        result = execute_run(parse_run_config(raw), prepare_run_dir(tmp_path, name), seed=0)
        assert result.status == "success", result.metrics["error"]
        assert result.metrics["portfolio"] is None
        assert not list(result.run_dir.glob("*equity*")), name
