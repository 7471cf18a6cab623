import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann.data import (
    DATASET_KEYS,
    load_loader,
    load_npz,
    regime_market_dataset,
    toy_hisso_dataset,
    validate_dataset,
)
from psann.metrics import equal_weight_allocations, portfolio_metrics


def _small_dataset():
    rng = np.random.default_rng(0)
    return {
        "X_train": rng.normal(size=(20, 3)),
        "y_train": rng.normal(size=20),
        "prices_train": 100 + rng.random((20, 2)),
        "X_val": rng.normal(size=(5, 3)),
        "y_val": rng.normal(size=(5, 1)),
    }


def custom_loader(steps=10, features=2):
    """A loader importable by path, for load_loader tests."""
    return {"X_train": np.ones((steps, features)), "y_train": np.arange(steps, dtype=float)}


def not_a_mapping_loader():
    return [1, 2, 3]


def test_validate_dataset_returns_new_float32_2d_arrays():
    data = _small_dataset()
    validated = validate_dataset(data)
    assert validated is not data
    assert set(validated) == set(data)
    assert all(a.dtype == np.float32 and a.ndim == 2 for a in validated.values())
    assert validated["y_train"].shape == (20, 1)
    validated["X_train"][0, 0] = 1e6
    assert data["X_train"][0, 0] != 1e6


def test_unknown_key_is_named_with_a_suggestion():
    data = _small_dataset()
    data["X_tran"] = data.pop("X_train")
    with pytest.raises(ValueError, match=r"'X_tran'.*Did you mean 'X_train'\?.*Allowed keys"):
        validate_dataset(data)


def test_x_train_is_required():
    with pytest.raises(ValueError, match="X_train"):
        validate_dataset({"X_test": np.ones((3, 2))})


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("X_train", np.ones(20), r"X_train must be 2-D.*\(20,\)"),
        ("X_val", np.ones((5, 4)), r"every X_\* split.*X_train \(20, 3\), X_val \(5, 4\)"),
        ("y_val", np.ones((5, 2)), r"every y_\* split.*y_train \(20, 1\), y_val \(5, 2\)"),
        ("y_train", np.ones(19), r"y_train \(19, 1\) and X_train \(20, 3\)"),
        ("prices_val", np.ones((4, 2)), r"prices_val \(4, 2\) and X_val \(5, 3\)"),
        ("context_test", np.ones((5, 1)), r"context_test is given but X_test is missing"),
        ("y_train", np.ones((20, 1, 1)), r"y_train must be 1-D .* or 2-D"),
        ("X_val", np.array(["a", "b"]), "X_val must be a real numeric array"),
    ],
)
def test_validation_errors_name_the_key(key, value, match):
    data = _small_dataset()
    data[key] = value
    with pytest.raises((ValueError, TypeError), match=match):
        validate_dataset(data, source="unit")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_key_and_first_index(bad):
    data = _small_dataset()
    data["X_val"][3, 1] = bad
    data["X_val"][4, 2] = bad
    with pytest.raises(ValueError, match=r"X_val must be finite.*\(3, 1\)"):
        validate_dataset(data)


def test_non_positive_prices_name_the_key_and_index():
    data = _small_dataset()
    data["prices_train"][7, 1] = 0.0
    with pytest.raises(ValueError, match=r"prices_train must be > 0.*\(7, 1\)"):
        validate_dataset(data)


def test_npz_round_trip(tmp_path):
    data = toy_hisso_dataset(steps=64)
    path = tmp_path / "data.npz"
    np.savez(path, **data)
    loaded = load_npz(path)
    assert set(loaded) == set(data)
    for key in data:
        np.testing.assert_array_equal(loaded[key], data[key])


def test_npz_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")
    path = tmp_path / "bad.npz"
    np.savez(path, X_train=np.ones((3, 2)), y_trian=np.ones(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*'y_trian'"):
        load_npz(path)


@pytest.mark.parametrize("separator", [".", ":"])
def test_load_loader_calls_the_function_with_kwargs(separator):
    data = load_loader(f"{__name__}{separator}custom_loader", {"steps": 4, "features": 3})
    assert data["X_train"].shape == (4, 3)
    assert data["y_train"].shape == (4, 1)


@pytest.mark.parametrize("path", ["no_such_module.loader", f"{__name__}.missing", "justaname"])
def test_load_loader_bad_path_names_the_setting(path):
    with pytest.raises(ValueError, match=r"data\.loader"):
        load_loader(path, {})


def test_load_loader_requires_a_mapping_result():
    with pytest.raises(TypeError, match=r"data\.loader.*mapping"):
        load_loader(f"{__name__}.not_a_mapping_loader", {})


def test_toy_dataset_is_deterministic_and_shaped():
    first, second = toy_hisso_dataset(seed=3), toy_hisso_dataset(seed=3)
    assert set(first) == {f"{k}_{s}" for k in ("X", "y", "prices") for s in ("train", "val", "test")}
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["X_train"], toy_hisso_dataset(seed=4)["X_train"])
    assert first["X_train"].shape == (307, 4) and first["y_test"].shape == (103, 2)
    assert first["prices_val"].shape == (102, 2)


def test_toy_prices_are_positive_and_not_monotone():
    data = toy_hisso_dataset()
    prices = np.concatenate([data["prices_train"], data["prices_val"], data["prices_test"]])
    steps = np.diff(prices, axis=0)
    assert (prices > 0).all()
    assert ((steps > 0).any(axis=0) & (steps < 0).any(axis=0)).all()
    # y_t is the scaled next-step log return, which the inputs predict.
    y = np.concatenate([data["y_train"], data["y_val"], data["y_test"]])
    np.testing.assert_allclose(np.log(prices[1:] / prices[:-1]), 0.01 * y[:-1], atol=1e-5)


def test_regime_market_is_deterministic():
    first, second = regime_market_dataset(steps=400, seed=5), regime_market_dataset(steps=400, seed=5)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["prices_test"], regime_market_dataset(steps=400, seed=6)["prices_test"])


def _one_hot_rows(scores):
    allocations = np.zeros_like(scores, dtype=np.float64)
    allocations[np.arange(len(scores)), scores.argmax(axis=1)] = 1.0
    return allocations


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regime_market_signal_beats_equal_weight_on_test_split(seed):
    data = regime_market_dataset(seed=seed)
    assets = data["y_test"].shape[1]
    prices, signal = data["prices_test"], data["X_test"][:, :assets]
    equal_weight = portfolio_metrics(equal_weight_allocations(*prices.shape), prices)["log_return"]
    follow_signal = portfolio_metrics(_one_hot_rows(signal), prices)["log_return"]
    against_signal = portfolio_metrics(_one_hot_rows(-signal), prices)["log_return"]
    assert follow_signal > equal_weight + 0.2
    # Equal weight is not the best one can do, nor the worst: the signal carries information.
    assert against_signal < equal_weight - 0.2


def test_regime_market_without_signal_has_no_edge():
    data = regime_market_dataset(seed=0, signal_strength=0.0)
    signal = data["X_train"][:, :4]
    y = data["y_train"]
    correlations = [np.corrcoef(signal[:, m], y[:, m])[0, 1] for m in range(4)]
    assert max(abs(c) for c in correlations) < 0.1


def test_regime_market_has_deep_drawdowns_and_losing_stretches():
    data = regime_market_dataset(seed=0)
    prices = np.concatenate([data["prices_train"], data["prices_val"], data["prices_test"]])
    drawdowns = prices / np.maximum.accumulate(prices, axis=0) - 1.0
    assert drawdowns.min() < -0.10
    # Holding everything long loses money over some 100-step stretch.
    equal_weight_value = prices.mean(axis=1)
    assert (equal_weight_value[100:] / equal_weight_value[:-100] < 1.0).any()


def test_regime_market_rejects_too_few_features():
    with pytest.raises(ValueError, match="features"):
        regime_market_dataset(assets=4, features=3)


@st.composite
def _dataset(draw):
    steps = draw(st.integers(1, 8))
    features = draw(st.integers(1, 3))
    data = {"X_train": np.ones((steps, features))}
    for key in draw(st.sets(st.sampled_from(["y_train", "prices_train", "context_train"]))):
        width = draw(st.integers(0, 2))
        data[key] = np.full((steps,) if width == 0 else (steps, width), 2.0)
    return data


@settings(max_examples=50, deadline=None)
@given(_dataset(), st.text(min_size=1, max_size=8))
def test_validate_dataset_accepts_consistent_data_and_names_any_unknown_key(data, extra_key):
    validated = validate_dataset(data)
    assert all(v.ndim == 2 and v.shape[0] == data["X_train"].shape[0] for v in validated.values())
    if extra_key not in DATASET_KEYS:
        with pytest.raises(ValueError, match="unknown dataset key"):
            validate_dataset({**data, extra_key: np.ones(3)})
