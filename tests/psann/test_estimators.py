"""The sklearn-style estimator surface: params, aliases, devices, input validation, shapes."""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psann import PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor
from psann.errors import ValidationError
from psann.training import Callback

ESTIMATORS = [PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor]
TINY = {
    PSANNRegressor: dict(hidden_layers=1, hidden_units=8),
    ResPSANNRegressor: dict(hidden_layers=1, hidden_units=8),
    WaveResNetRegressor: dict(hidden_units=8, depth=1),
}


def _tiny(cls, **kwargs):
    return cls(**{**TINY[cls], "epochs": 2, "batch_size": 32, "random_state": 0, "device": "cpu", **kwargs})


def _data(n=64, features=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, np.sin(X.sum(axis=1)).astype(np.float32)


# -- parameter protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_init_stores_arguments_unchanged_and_get_params_returns_them(cls):
    est = cls(hidden_units=17, lr=0.005, activation_bounds={"amplitude": [0.1, 3.0]}, device=torch.device("cpu"))
    params = est.get_params()
    assert params["hidden_units"] == 17 and params["lr"] == 0.005
    assert params["activation_bounds"] == {"amplitude": [0.1, 3.0]}
    assert params["device"] == torch.device("cpu")
    assert "aliases" not in params and params["hidden_width"] == "deprecated"


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_set_params_changes_values_and_returns_self(cls):
    est = cls()
    assert est.set_params(hidden_units=5, epochs=3) is est
    assert est.get_params()["hidden_units"] == 5 and est.epochs == 3


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_sklearn_clone_copies_params_and_drops_fitted_state(cls):
    from sklearn.base import clone

    X, y = _data()
    est = _tiny(cls, hidden_units=9).fit(X, y)
    copy = clone(est)
    assert type(copy) is cls
    assert copy.get_params() == est.get_params()
    assert not hasattr(copy, "model_")


def test_repr_lists_only_changed_params():
    assert repr(PSANNRegressor(hidden_units=5)) == "PSANNRegressor(hidden_units=5)"


# -- deprecated aliases ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_deprecated_alias_is_an_explicit_parameter_that_warns_at_fit_and_maps(cls):
    X, y = _data()
    est = _tiny(cls, hidden_width=12)
    est.set_params(hidden_units=64)  # the default: only the alias is given
    assert est.get_params()["hidden_width"] == 12  # __init__ stores it unchanged (sklearn's rule)
    with pytest.warns(DeprecationWarning, match="'hidden_width' is deprecated, use 'hidden_units'") as record:
        est.fit(X, y)
    assert record[0].filename == __file__
    assert est.canonical_params()["hidden_units"] == 12 and "hidden_width" not in est.canonical_params()
    first = next(m for m in est.model_.net.modules() if isinstance(m, torch.nn.Linear))
    assert first.out_features == 12


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unset_alias_does_not_warn(cls):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        _tiny(cls).fit(X, y)


def test_conflicting_alias_and_canonical_values_are_refused_with_the_alias_as_key():
    with pytest.raises(ValidationError) as excinfo:
        PSANNRegressor(hidden_units=16, hidden_width=32).canonical_params()
    assert excinfo.value.key == "hidden_width"
    assert "hidden_units=16 and its deprecated alias hidden_width=32" in str(excinfo.value)


def test_agreeing_alias_and_canonical_values_are_accepted():
    assert PSANNRegressor(hidden_units=32, hidden_width=32).canonical_params()["hidden_units"] == 32


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_unknown_keyword_is_a_type_error(cls):
    with pytest.raises(TypeError, match="unexpected keyword argument 'hiden_units'"):
        cls(hiden_units=3)
    with pytest.raises(ValueError, match="Invalid parameter 'epochz'"):
        cls().set_params(epochz=3)


def test_alias_for_a_parameter_the_class_lacks_is_unknown():
    # hidden_channels -> conv_channels only exists on convolutional estimators.
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden_channels'"):
        PSANNRegressor(hidden_channels=8)


# -- parameter constraints -------------------------------------------------------------------------


def test_parameter_errors_carry_the_key_and_use_the_one_template():
    X, y = _data()
    with pytest.raises(ValidationError) as excinfo:
        PSANNRegressor(hidden_units=0).fit(X, y)
    assert excinfo.value.key == "hidden_units"
    assert str(excinfo.value) == "hidden_units: PSANNRegressor expects an int >= 1, got 0"


@pytest.mark.parametrize(
    "cls, params, key, message",
    [
        (PSANNRegressor, {"lr": -0.1}, "lr", "PSANNRegressor expects a finite number > 0.0, got -0.1"),
        (PSANNRegressor, {"lr_schedule": "step"}, "lr_schedule", "PSANNRegressor expects one of 'constant', 'cosine', 'linear', got 'step'"),
        (PSANNRegressor, {"epochs": 2.5}, "epochs", "PSANNRegressor expects an int >= 1, got 2.5"),
        (PSANNRegressor, {"early_stopping": "yes"}, "early_stopping", "PSANNRegressor expects a bool, got 'yes'"),
        (ResPSANNRegressor, {"drop_path": 1.5}, "drop_path", "ResPSANNRegressor expects a finite number >= 0.0 and <= 0.99, got 1.5"),
        (WaveResNetRegressor, {"data_format": "nchw"}, "data_format", "WaveResNetRegressor expects one of 'channels_first', 'channels_last', got 'nchw'"),
        (WaveResNetRegressor, {"depth": 2, "progressive_depth_initial": 3, "progressive_depth_interval": 1}, "progressive_depth_initial", "WaveResNetRegressor expects a value <= depth (2), got 3"),
        (PSANNRegressor, {"device": "tpu"}, "device", "PSANNRegressor expects 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got 'tpu'"),
    ],
)
def test_parameter_constraint_messages(cls, params, key, message):
    X, y = _data()
    with pytest.raises(ValidationError) as excinfo:
        cls(**params).fit(X, y)
    assert excinfo.value.key == key
    assert str(excinfo.value) == f"{key}: {message}"


@settings(max_examples=25, deadline=None)
@given(st.integers(max_value=0))
def test_any_non_positive_hidden_units_is_refused_before_training(value):
    est = PSANNRegressor(hidden_units=value)
    with pytest.raises(ValidationError, match=rf"got {value}$"):
        est.validate_params()


# -- devices ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "auto"])
def test_device_accepts_strings_torch_devices_and_auto(device):
    X, y = _data()
    est = _tiny(PSANNRegressor, device=device).fit(X, y)
    expected = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
    assert est.device_.type == expected
    assert next(est.model_.parameters()).device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_value_error():
    X, y = _data()
    with pytest.raises(ValidationError, match="device: 'cuda' was requested but CUDA is not available; use 'cpu' or 'auto'"):
        _tiny(PSANNRegressor, device="cuda").fit(X, y)


def test_float32_tensor_on_the_device_is_not_copied():
    X, y = _data()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    class SeeTrainingData(Callback):
        def on_train_begin(self, loop, info):
            self.X, self.y = loop.phase_ref.X, loop.phase_ref.y

    seen = SeeTrainingData()
    est = _tiny(PSANNRegressor).fit(X_t, y_t.unsqueeze(1), callbacks=[seen])
    assert seen.X.data_ptr() == X_t.data_ptr()
    assert seen.y.data_ptr() == y_t.data_ptr()

    pointers = []
    handle = est.model_.register_forward_pre_hook(lambda module, args: pointers.append(args[0].data_ptr()))
    out = est.predict_tensor(X_t)
    handle.remove()
    assert pointers == [X_t.data_ptr()]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (64, 1)


def test_other_dtypes_are_converted_and_predictions_are_float64():
    X, y = _data()
    est = _tiny(PSANNRegressor).fit(X.astype(np.float64), y.astype(np.float64))
    assert est.predict(X.astype(np.float64)).dtype == np.float64
    assert next(est.model_.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(est.predict(X.tolist()), est.predict(X))


def test_predictions_do_not_depend_on_the_batch_they_are_in():
    X, y = _data(n=200)
    est = _tiny(PSANNRegressor, w0=30.0).fit(X, y)
    full = est.predict(X)
    one_by_one = np.concatenate([est.predict(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(full, one_by_one, rtol=1e-9, atol=1e-12)


def test_fitted_attributes_follow_sklearn():
    X, y = _data()
    est = _tiny(PSANNRegressor).fit(X, y)
    assert est.n_features_in_ == 2 and est.input_shape_ == (2,)
    shaped = _tiny(PSANNRegressor).fit(np.ones((20, 3, 4), np.float32), np.ones(20, np.float32))
    assert shaped.n_features_in_ == 3 and shaped.input_shape_ == (3, 4)


# -- input validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused(bad):
    X, y = _data(n=20)
    X[3, 1] = bad
    with pytest.raises(ValueError, match=r"Input X contains (NaN|infinity)"):
        _tiny(PSANNRegressor).fit(X, y)
    X, y = _data(n=20)
    y[5] = bad
    with pytest.raises(ValueError, match=r"Input y contains (NaN|infinity)"):
        _tiny(PSANNRegressor).fit(X, y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_tensors_are_refused_with_the_index_and_shape(bad):
    X, y = _data(n=20)
    X[3, 1] = bad
    with pytest.raises(ValidationError, match=r"X: contains NaN or inf \(first at index \(3, 1\), shape \(20, 2\)\)"):
        _tiny(PSANNRegressor).fit(torch.from_numpy(X), torch.from_numpy(y))


def test_one_dimensional_X_is_refused_with_a_reshape_hint():
    X, y = _data(n=20)
    with pytest.raises(ValueError, match=r"(?s)Expected 2D array, got 1D array instead.*reshape"):
        _tiny(PSANNRegressor).fit(X[:, 0], y)
    with pytest.raises(ValidationError, match=r"got shape \(20,\); reshape a single feature"):
        _tiny(PSANNRegressor).fit(torch.from_numpy(X[:, 0]), torch.from_numpy(y))


def test_n_dimensional_samples_are_flattened_into_features_by_dense_estimators():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 2, 3)).astype(np.float32)
    est = _tiny(PSANNRegressor).fit(X, X.sum(axis=(1, 2)))
    assert est.predict(X).shape == (40,)
    assert est.model_.net.dim_in == 6


def test_zero_features_are_refused():
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(5, 0\)\)"):
        _tiny(PSANNRegressor).fit(np.ones((5, 0), np.float32), np.ones(5, np.float32))


def test_length_mismatch_names_y_and_both_sizes():
    X, y = _data(n=20)
    with pytest.raises(ValidationError) as excinfo:
        _tiny(PSANNRegressor).fit(X, y[:19])
    assert excinfo.value.key == "y"
    assert "expected 20 rows (one per sample of X), got shape (19, 1)" in str(excinfo.value)


def test_predict_with_other_feature_count_is_refused_with_both_counts():
    X, y = _data()
    est = _tiny(PSANNRegressor).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features, but PSANNRegressor is expecting 2 features as input"):
        est.predict(np.ones((64, 3), np.float32))


def test_predict_with_other_sample_shape_is_refused_with_both_shapes():
    est = _tiny(PSANNRegressor).fit(np.ones((20, 3, 4), np.float32), np.ones(20, np.float32))
    with pytest.raises(ValidationError, match=r"expected samples of shape \(3, 4\) \(as in fit\), got \(3, 5\)"):
        est.predict(np.ones((20, 3, 5), np.float32))


def test_predict_before_fit_is_sklearns_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        PSANNRegressor().predict(np.ones((2, 2)))


def test_non_numeric_input_is_refused():
    with pytest.raises(ValueError, match="could not convert string to float"):
        _tiny(PSANNRegressor).fit(np.array([["a", "b"]] * 4), np.ones(4))


def test_fit_without_y_is_refused_outside_hisso():
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None .*hisso=True"):
        _tiny(PSANNRegressor).fit(np.ones((4, 2)))


# -- outputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_prediction_shape_follows_y(cls):
    X, y = _data()
    assert _tiny(cls).fit(X, y).predict(X).shape == (64,)
    assert _tiny(cls).fit(X, y[:, None]).predict(X).shape == (64, 1)
    assert _tiny(cls).fit(X, np.stack([y, -y], axis=1)).predict(X).shape == (64, 2)


def test_score_is_r2():
    X, y = _data()
    est = _tiny(PSANNRegressor).fit(X, y)
    pred = est.predict(X)
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert est.score(X, y) == pytest.approx(r2, rel=1e-5)


# -- WaveResNet shaped inputs and schedules ---------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_wave_resnet_preserve_shape_maps_every_position(data_format):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 3, 10)).astype(np.float32)  # (N, C, L)
    y = np.stack([X.sum(axis=1), X[:, 0] - X[:, 1]], axis=1)  # (N, 2, L)
    if data_format == "channels_last":
        X, y = X.transpose(0, 2, 1).copy(), y.transpose(0, 2, 1).copy()  # (N, L, C), (N, L, 2)
    est = _tiny(WaveResNetRegressor, preserve_shape=True, data_format=data_format).fit(X, y)
    pred = est.predict(X)
    assert pred.shape == y.shape
    # Each position is mapped on its own: permuting positions permutes the outputs the same way.
    perm = rng.permutation(10)
    axis = 2 if data_format == "channels_first" else 1
    np.testing.assert_allclose(est.predict(np.take(X, perm, axis=axis)), np.take(pred, perm, axis=axis), rtol=1e-5, atol=1e-6)
    assert est.model_.net.dim_in == 3


def test_wave_resnet_preserve_shape_refuses_targets_of_the_wrong_layout():
    X = np.ones((4, 3, 10), np.float32)
    with pytest.raises(ValueError, match=r"y: with preserve_shape=True and channels_first, expected targets of shape \(N, out, 10\), got \(4, 2, 9\)"):
        _tiny(WaveResNetRegressor, preserve_shape=True).fit(X, np.ones((4, 2, 9), np.float32))


def test_wave_resnet_without_preserve_shape_flattens_shaped_inputs():
    X = np.random.default_rng(0).normal(size=(16, 3, 5)).astype(np.float32)
    est = _tiny(WaveResNetRegressor).fit(X, X.sum(axis=(1, 2)))
    assert est.model_.net.dim_in == 15
    assert est.predict(X).shape == (16,)


def test_wave_resnet_w0_warmup_and_progressive_depth_run_in_supervised_fits():
    X, y = _data()
    est = _tiny(
        WaveResNetRegressor, epochs=4, depth=3, first_layer_w0=30.0, w0_warmup_epochs=3,
        progressive_depth_initial=1, progressive_depth_interval=1,
    ).fit(X, y)
    assert est.history_.column("first_layer_w0") == pytest.approx([1.0, 1.0 + 29 / 3, 1.0 + 58 / 3, 30.0])
    assert est.history_.column("depth") == [2, 3, 3, 3]


@pytest.mark.parametrize("epochs", [2, 5])  # best epoch inside the warm-up, and after it
def test_the_fitted_model_has_the_w0_its_best_epoch_was_validated_with(epochs):
    X, y = _data()
    X_val, y_val = X[::2] + 0.05, y[::2]
    est = _tiny(WaveResNetRegressor, epochs=epochs, depth=1, first_layer_w0=30.0, w0_warmup_epochs=4).fit(
        X, y, validation_data=(X_val, y_val))
    best = next(r for r in est.history_ if r["is_best"] and r["epoch"] == est.best_epoch_)
    assert est.model_.net.first_layer_w0 == pytest.approx(best["first_layer_w0"])
    # So the fitted estimator reproduces the best epoch's val_loss.
    pred = est.predict(X_val).reshape(y_val.shape)
    assert float(np.mean((pred - y_val) ** 2)) == pytest.approx(best["val_loss"], rel=1e-4)


# -- the README quick start ------------------------------------------------------------------------


def test_quick_start_damped_sine_reaches_r2_095_on_cpu():
    X = np.linspace(-3, 3, 512, dtype=np.float32).reshape(-1, 1)
    y = np.exp(-0.3 * np.abs(X[:, 0])) * np.sin(3 * X[:, 0])
    est = PSANNRegressor(epochs=300, random_state=0, device="cpu").fit(X, y)
    assert est.score(X, y) >= 0.95
