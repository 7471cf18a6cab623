import re

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
from psann.errors import ValidationError, ValidationTypeError
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


def _error(build, *args, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        build(*args, **kwargs)
    assert str(info.value) == f"{info.value.key}: {info.value.reason}"
    return info.value


def test_unknown_key_is_named_with_a_suggestion():
    data = _small_dataset()
    data["X_tran"] = data.pop("X_train")
    error = _error(validate_dataset, data)
    assert error.key == "X_tran"
    assert error.reason.startswith("unknown key (did you mean 'X_train'?); allowed: X_train, y_train")


def test_x_train_is_required():
    error = _error(validate_dataset, {"X_test": np.ones((3, 2))})
    assert error.key == "X_train"
    assert error.reason == "missing required key; got keys X_test"


@pytest.mark.parametrize(
    ("key", "value", "error_key", "match"),
    [
        ("X_train", np.ones(20), "X_train", r"expected \(T, F\), \(T, C, L\) or \(T, C, H, W\), got shape \(20,\)"),
        ("X_train", np.ones((20, 1, 1, 1, 1)), "X_train", r"expected \(T, F\), \(T, C, L\) or \(T, C, H, W\), got shape \(20, 1, 1, 1, 1\)"),
        ("X_val", np.ones((5, 4)), "X_val", r"every X_\* split, got X_train \(20, 3\), X_val \(5, 4\)"),
        ("X_val", np.ones((5, 3, 2)), "X_val", r"same sample shape in every X_\* split, got X_train \(20, 3\), X_val \(5, 3, 2\)"),
        ("y_val", np.ones((5, 2)), "y_val", r"every y_\* split, got y_train \(20, 1\), y_val \(5, 2\)"),
        ("cond_val", np.ones((4, 2)), "cond_val", r"cond_val \(4, 2\) and X_val \(5, 3\)"),
        ("y_train", np.ones(19), "y_train", r"as many rows as X_train, got y_train \(19, 1\) and X_train \(20, 3\)"),
        ("prices_val", np.ones((4, 2)), "prices_val", r"prices_val \(4, 2\) and X_val \(5, 3\)"),
        ("context_test", np.ones((5, 1)), "X_test", r"missing, but context_test is given"),
        ("prices_train", np.ones((20, 1, 1)), "prices_train", r"expected a 1-D \(T,\) or 2-D \(T, K\) array"),
        ("y_val", np.ones((0, 1)), "y_val", r"expected a non-empty array, got shape \(0, 1\)"),
    ],
)
def test_validation_errors_are_keyed_by_the_array_at_fault(key, value, error_key, match):
    data = _small_dataset()
    data[key] = value
    error = _error(validate_dataset, data, source="unit")
    assert error.key == error_key
    assert re.search(match, error.reason)
    assert error.reason.endswith("(in unit)")  # the source is named in the text, not in the key


def test_a_non_numeric_array_is_a_type_error_keyed_by_the_array():
    data = _small_dataset()
    data["X_val"] = np.array(["a", "b"])
    with pytest.raises(TypeError) as info:
        validate_dataset(data)
    assert isinstance(info.value, ValidationTypeError)
    assert (info.value.key, info.value.reason) == ("X_val", "expected a real numeric array, got dtype <U1")


def test_a_dataset_that_is_not_a_mapping_is_keyed_by_its_source():
    with pytest.raises(ValidationTypeError) as info:
        validate_dataset([np.ones((3, 2))], source="my_loader")
    assert info.value.key == "my_loader"
    with pytest.raises(ValidationTypeError) as info:
        validate_dataset([np.ones((3, 2))])
    assert info.value.key == "dataset"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_key_and_first_index(bad):
    data = _small_dataset()
    data["X_val"][3, 1] = bad
    data["X_val"][4, 2] = bad
    error = _error(validate_dataset, data)
    assert error.key == "X_val"
    assert re.fullmatch(r"expected finite values, got -?(nan|inf) at index \(3, 1\)", error.reason)


def test_non_positive_prices_name_the_key_and_index():
    data = _small_dataset()
    data["prices_train"][7, 1] = 0.0
    error = _error(validate_dataset, data)
    assert (error.key, error.reason) == ("prices_train", "expected prices > 0, got 0.0 at index (7, 1)")


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
    error = _error(load_npz, path)
    assert error.key == "y_trian"
    assert "did you mean 'y_train'" in error.reason and error.reason.endswith(f"(in {path})")


def test_npz_that_needs_pickle_is_refused_keyed_by_its_path(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X_train=np.array([{"a": 1}], dtype=object))
    error = _error(load_npz, path)
    assert error.key == str(path)
    assert "without pickle" in error.reason


@pytest.mark.parametrize("separator", [".", ":"])
def test_load_loader_calls_the_function_with_kwargs(separator):
    data = load_loader(f"{__name__}{separator}custom_loader", {"steps": 4, "features": 3})
    assert data["X_train"].shape == (4, 3)
    assert data["y_train"].shape == (4, 1)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("no_such_module.loader", "outside the trusted modules"),
        (f"{__name__}.missing", "cannot import"),
        ("justaname", "expected an import path such as 'package.module.function', got 'justaname'"),
        (f"{__name__}.DATASET_KEYS", "is a tuple, not a callable"),
    ],
)
def test_load_loader_bad_path_is_keyed_data_loader(path, reason):
    error = _error(load_loader, path, {})
    assert error.key == "data.loader"
    assert reason in error.reason


def test_load_loader_wrong_argument_types_are_type_errors_keyed_by_the_setting():
    with pytest.raises(ValidationTypeError) as info:
        load_loader(5, {})
    assert info.value.key == "data.loader" and isinstance(info.value, TypeError)
    with pytest.raises(ValidationTypeError) as info:
        load_loader(f"{__name__}.custom_loader", [1])
    assert info.value.key == "data.kwargs"


def test_load_loader_requires_a_mapping_result():
    with pytest.raises(ValidationTypeError) as info:
        load_loader(f"{__name__}.not_a_mapping_loader", {})
    assert info.value.key == "data.loader"
    assert "returned a list, expected a mapping of arrays" in info.value.reason


def test_load_loader_errors_in_its_arrays_name_the_loader():
    error = _error(load_loader, f"{__name__}.custom_loader", {"steps": 0})
    assert error.key == "X_train"
    assert error.reason.endswith(f"(in data.loader {__name__}.custom_loader)")


@pytest.mark.parametrize(
    "make, kwargs, key",
    [
        (toy_hisso_dataset, {"steps": 3}, "steps"),
        (toy_hisso_dataset, {"steps": 5.0}, "steps"),
        (toy_hisso_dataset, {"features": 0}, "features"),
        (toy_hisso_dataset, {"train_fraction": 1.0}, "train_fraction"),
        (toy_hisso_dataset, {"train_fraction": "half"}, "train_fraction"),
        (toy_hisso_dataset, {"val_fraction": 0.5}, "val_fraction"),
        (toy_hisso_dataset, {"steps": 8}, "steps"),  # 4/1/3 rows: a split under 2 rows
        (regime_market_dataset, {"assets": 4, "features": 3}, "features"),
        (regime_market_dataset, {"signal_strength": -1.0}, "signal_strength"),
        (regime_market_dataset, {"signal_strength": float("nan")}, "signal_strength"),
    ],
)
def test_builtin_generators_key_their_errors_by_argument(make, kwargs, key):
    error = _error(make, **kwargs)
    assert error.key == key
    # A run config places them under its data.kwargs.
    assert error.under("data.kwargs").key == f"data.kwargs.{key}"


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
    error = _error(regime_market_dataset, assets=4, features=3)
    assert (error.key, error.reason) == ("features", "expected an int >= 4, got 3")


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
        with pytest.raises(ValidationError) as info:
            validate_dataset({**data, extra_key: np.ones(3)})
        assert info.value.key == extra_key
        assert info.value.reason.startswith("unknown key")


def test_windowed_samples_and_conditioning_are_accepted():
    data = _small_dataset()
    rng = np.random.default_rng(0)
    data.update(
        X_train=rng.normal(size=(20, 4, 8)), X_val=rng.normal(size=(5, 4, 8)),
        cond_train=rng.normal(size=20), cond_val=rng.normal(size=(5, 1)),
    )
    for key in [k for k in data if k.endswith("_test")]:
        del data[key]
    result = validate_dataset(data)
    assert result["X_train"].shape == (20, 4, 8) and result["cond_train"].shape == (20, 1)


def test_sequence_market_windows_end_at_their_step_and_share_the_regime_market_prices():
    from psann.data import regime_market_dataset, sequence_market_dataset

    flat = regime_market_dataset(steps=300, assets=3, features=5, seed=2)
    windows = sequence_market_dataset(steps=300, assets=3, features=5, lookback=16, seed=2)
    X_flat = np.concatenate([flat[f"X_{s}"] for s in ("train", "val", "test")])
    X_win = np.concatenate([windows[f"X_{s}"] for s in ("train", "val", "test")])
    prices = np.concatenate([windows[f"prices_{s}"] for s in ("train", "val", "test")])
    flat_prices = np.concatenate([flat[f"prices_{s}"] for s in ("train", "val", "test")])
    assert X_win.shape == (300 - 15, 5, 16)
    for n in (0, 100, 284):  # row n is the window of steps n .. n + 15, oldest first
        np.testing.assert_array_equal(X_win[n], X_flat[n : n + 16].T)
    np.testing.assert_array_equal(prices, flat_prices[15:])


def test_sequence_market_refuses_a_lookback_that_leaves_no_rows():
    from psann.data import sequence_market_dataset

    with pytest.raises(ValidationError) as info:
        sequence_market_dataset(steps=40, lookback=38)
    assert info.value.key == "lookback"
