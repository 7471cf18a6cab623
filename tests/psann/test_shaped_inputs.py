"""Inputs of any rank, ResConv, WaveResNet conditioning, mixed precision, format-1 saves."""

from pathlib import Path

import numpy as np
import pytest
import torch

from psann.errors import ValidationError
from psann.estimators import (
    PSANNRegressor,
    ResConvPSANNRegressor,
    ResPSANNRegressor,
    WaveResNetRegressor,
)
from psann.hisso import hisso_infer_series
from _faults import InfGradientAt
from psann.training import Callback

DATA = Path(__file__).parent / "data"
SMALL = {
    PSANNRegressor: dict(hidden_layers=1, hidden_units=8),
    ResPSANNRegressor: dict(hidden_layers=1, hidden_units=8),
    WaveResNetRegressor: dict(hidden_units=8, depth=1),
    ResConvPSANNRegressor: dict(conv_channels=4, depth=1),
}
ALL = list(SMALL)


def _est(cls, **kwargs):
    return cls(**{**SMALL[cls], "epochs": 2, "batch_size": 16, "random_state": 0, "device": "cpu", **kwargs})


def _sample_shape(rank, data_format):
    channels, positions = 3, {2: (), 3: (5,), 4: (4, 3)}[rank]
    if rank == 2:
        return (6,)
    return (channels, *positions) if data_format == "channels_first" else (*positions, channels)


def conditioning_of(X):
    """A module-level conditioning builder: per-sample mean and spread of the inputs."""
    flat = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    return np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1)


# -- any rank, both layouts ------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("rank", [2, 3, 4])
@pytest.mark.parametrize("cls", ALL)
def test_every_estimator_fits_and_predicts_every_rank_in_both_layouts(cls, rank, data_format):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, *_sample_shape(rank, data_format))).astype(np.float32)
    y = rng.normal(size=(24, 2)).astype(np.float32)
    est = _est(cls, data_format=data_format).fit(X, y)
    assert est.predict(X).shape == (24, 2)
    assert est.input_shape_ == X.shape[1:] and est.n_features_in_ == X.shape[1]


def test_channels_last_input_is_the_same_model_as_channels_first():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(32, 3, 5)).astype(np.float32)
    y = X.mean(axis=(1, 2))
    first = _est(PSANNRegressor).fit(X, y)
    last = _est(PSANNRegressor, data_format="channels_last").fit(np.moveaxis(X, 1, -1), y)
    np.testing.assert_allclose(first.predict(X), last.predict(np.moveaxis(X, 1, -1)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [PSANNRegressor, ResPSANNRegressor])
def test_dense_estimators_refuse_preserve_shape_by_name(cls):
    with pytest.raises(ValidationError) as excinfo:
        _est(cls, preserve_shape=True).fit(np.ones((8, 2, 3), np.float32), np.ones((8, 1), np.float32))
    assert excinfo.value.key == "preserve_shape"
    assert "WaveResNetRegressor or ResConvPSANNRegressor" in str(excinfo.value)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("spatial", [(7,), (4, 5)])
@pytest.mark.parametrize("cls", [WaveResNetRegressor, ResConvPSANNRegressor])
def test_preserve_shape_gives_outputs_at_every_position(cls, spatial, data_format):
    rng = np.random.default_rng(2)
    n, channels, outputs = 10, 3, 2
    if data_format == "channels_first":
        X = rng.normal(size=(n, channels, *spatial)).astype(np.float32)
        y = rng.normal(size=(n, outputs, *spatial)).astype(np.float32)
    else:
        X = rng.normal(size=(n, *spatial, channels)).astype(np.float32)
        y = rng.normal(size=(n, *spatial, outputs)).astype(np.float32)
    est = _est(cls, preserve_shape=True, data_format=data_format).fit(X, y)
    assert est.predict(X).shape == y.shape


def test_res_conv_pools_positions_without_preserve_shape_and_reads_2d_input_as_one_channel():
    X = np.random.default_rng(3).normal(size=(16, 9)).astype(np.float32)
    est = _est(ResConvPSANNRegressor).fit(X, X.sum(axis=1))
    assert est.predict(X).shape == (16,)
    assert est.model_.net.dim_in == 1 and est.model_.net.spatial_dims == 1


def test_res_conv_kernel_size_must_be_odd():
    with pytest.raises(ValidationError) as excinfo:
        _est(ResConvPSANNRegressor, kernel_size=4).fit(np.ones((8, 2, 6), np.float32), np.ones(8, np.float32))
    assert excinfo.value.key == "kernel_size"


def test_res_conv_deprecated_names_map_with_a_warning():
    est = _est(ResConvPSANNRegressor, hidden_channels=6, hidden_layers=2)
    est.set_params(conv_channels=32, depth=3)  # the defaults: only the deprecated names are given
    with pytest.warns(DeprecationWarning) as record:
        est.fit(np.ones((8, 2, 6), np.float32), np.ones(8, np.float32))
    assert sorted(str(w.message) for w in record) == [
        "ResConvPSANNRegressor: 'hidden_channels' is deprecated, use 'conv_channels' instead",
        "ResConvPSANNRegressor: 'hidden_layers' is deprecated, use 'depth' instead",
    ]
    assert est.model_.net.stem.conv.out_channels == 6 and est.model_.net.depth == 2


def test_wave_resnet_hidden_layers_is_depth_with_a_warning():
    est = WaveResNetRegressor(hidden_units=8, hidden_layers=3, epochs=1, random_state=0, device="cpu")
    with pytest.warns(DeprecationWarning, match="'hidden_layers' is deprecated, use 'depth'"):
        est.fit(np.ones((8, 2), np.float32), np.ones(8, np.float32))
    assert est.model_.net.depth == 3


# -- HISSO on shaped samples -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ResConvPSANNRegressor, WaveResNetRegressor, PSANNRegressor])
def test_hisso_runs_on_channels_first_windows_as_consecutive_samples(cls):
    rng = np.random.default_rng(4)
    steps = 80
    X = rng.normal(size=(steps, 4, 16)).astype(np.float32)
    prices = np.cumprod(1 + 0.01 * rng.normal(size=(steps, 2)), axis=0).astype(np.float32)
    opts = dict(window=8, batch_episodes=4, updates_per_epoch=2, reward="portfolio")
    est = _est(cls).fit(X, hisso=True, hisso_options=opts, context=prices)
    actions = hisso_infer_series(est, X)
    assert actions.shape == (steps, 2)
    np.testing.assert_allclose(actions.sum(axis=1), 1.0, rtol=1e-5)


def test_hisso_on_shaped_samples_needs_prices():
    with pytest.raises(ValidationError) as excinfo:
        _est(ResConvPSANNRegressor).fit(np.ones((40, 2, 8), np.float32), hisso=True, hisso_options=dict(window=4))
    assert excinfo.value.key == "context"


def test_hisso_refuses_per_position_outputs():
    with pytest.raises(ValidationError) as excinfo:
        _est(WaveResNetRegressor, preserve_shape=True).fit(
            np.ones((40, 2, 8), np.float32), hisso=True, hisso_options=dict(window=4), context=np.ones((40, 2), np.float32)
        )
    assert excinfo.value.key == "preserve_shape"


# -- WaveResNet conditioning -----------------------------------------------------------------------


def test_conditioning_changes_predictions_through_film():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    cond = rng.normal(size=(64, 2)).astype(np.float32)
    y = X[:, 0] * cond[:, 0]
    est = _est(WaveResNetRegressor, context_dim=2, epochs=20, lr=0.01).fit(X, y, conditioning=cond)
    assert est.model_.conditioning_dim == 2
    a, b = est.predict(X, conditioning=cond), est.predict(X, conditioning=-cond)
    assert not np.allclose(a, b)


def test_missing_or_misshapen_conditioning_is_refused_by_name():
    X = np.ones((16, 3), np.float32)
    with pytest.raises(ValidationError, match=r"needs conditioning of shape \(N, 2\)") as excinfo:
        _est(WaveResNetRegressor, context_dim=2).fit(X, np.ones(16))
    assert excinfo.value.key == "conditioning"
    with pytest.raises(ValidationError, match=r"expected shape \(16, 2\) \(one row per sample\), got \(16, 3\)"):
        _est(WaveResNetRegressor, context_dim=2).fit(X, np.ones(16), conditioning=np.ones((16, 3)))
    with pytest.raises(ValidationError, match="takes no conditioning") as excinfo:
        _est(PSANNRegressor).fit(X, np.ones(16), conditioning=np.ones((16, 2)))
    assert excinfo.value.key == "conditioning"


BUILDER_PATH = f"{conditioning_of.__module__}:conditioning_of"


@pytest.mark.parametrize("builder", [conditioning_of, BUILDER_PATH], ids=["callable", "import-path"])
def test_conditioning_builder_is_used_and_survives_save_and_load(builder, tmp_path):
    X = np.random.default_rng(6).normal(size=(48, 2, 5)).astype(np.float32)
    y = X.mean(axis=(1, 2))
    est = _est(WaveResNetRegressor, context_dim=2, conditioning_builder=builder).fit(X, y)
    np.testing.assert_array_equal(est.predict(X), est.predict(X, conditioning=conditioning_of(X)))
    est.save(tmp_path / "model")
    loaded = WaveResNetRegressor.load(tmp_path / "model")
    assert loaded.get_params()["conditioning_builder"] == BUILDER_PATH
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_a_lambda_builder_cannot_be_saved_and_says_why(tmp_path):
    X = np.ones((16, 3), np.float32)
    est = _est(WaveResNetRegressor, context_dim=1, conditioning_builder=lambda X: np.ones((len(X), 1))).fit(X, np.ones(16))
    with pytest.raises(ValidationError, match="cannot be saved by import path") as excinfo:
        est.save(tmp_path / "model")
    assert excinfo.value.key == "conditioning_builder"


# -- save/load with every optional part ------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: (_est(PSANNRegressor, data_format="channels_last"), (20, 4, 3), (20,)),
        lambda: (_est(ResPSANNRegressor), (20, 3, 4, 2), (20, 2)),
        lambda: (_est(WaveResNetRegressor, preserve_shape=True, w0_warmup_epochs=2, depth=2,
                      progressive_depth_initial=1, progressive_depth_interval=1), (20, 3, 6), (20, 2, 6)),
        lambda: (_est(ResConvPSANNRegressor, preserve_shape=True, data_format="channels_last"), (20, 4, 5, 3), (20, 4, 5, 2)),
        lambda: (_est(ResConvPSANNRegressor), (20, 3, 8), (20, 1)),
    ],
    ids=["dense-channels-last", "residual-4d", "wave-per-position-schedules", "resconv-2d-per-position", "resconv-pooled"],
)
def test_save_and_load_give_identical_predictions(make, tmp_path):
    est, x_shape, y_shape = make()
    rng = np.random.default_rng(7)
    X = rng.normal(size=x_shape).astype(np.float32)
    est.fit(X, rng.normal(size=y_shape).astype(np.float32))
    est.save(tmp_path / "model")
    loaded = type(est).load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    with pytest.raises(ValidationError, match="expected samples of shape"):
        loaded.predict(rng.normal(size=(4, *x_shape[1:-1], x_shape[-1] + 1)).astype(np.float32))


@pytest.mark.parametrize("name, cls", [("format1_psann", PSANNRegressor), ("format1_wave", WaveResNetRegressor)])
def test_a_format_1_save_from_the_previous_release_still_loads(name, cls):
    # Written by the code of the previous release (metadata format_version 1).
    X = np.load(DATA / "format1_psann_X.npy")
    loaded = cls.load(DATA / name)
    np.testing.assert_allclose(loaded.predict(X), np.load(DATA / f"{name}_pred.npy"), rtol=1e-5, atol=1e-6)
    assert loaded.n_features_in_ == 3 and loaded.input_shape_ == (3,)


# -- mixed precision in supervised fits and warm starts --------------------------------------------


def test_cpu_bfloat16_autocast_runs_supervised_fits_and_counts_skipped_steps():
    X = np.random.default_rng(8).normal(size=(64, 3)).astype(np.float32)
    est = _est(PSANNRegressor, mixed_precision=True, amp_dtype="bfloat16", batch_size=16)
    est.fit(X, X.sum(axis=1), callbacks=[InfGradientAt(step=2)])
    assert est.amp_ == {"enabled": True, "dtype": "bfloat16", "skipped_steps": 1}
    assert np.isfinite(est.predict(X)).all()


def test_cpu_float16_is_not_active_and_says_so(caplog):
    X = np.ones((16, 2), np.float32)
    with caplog.at_level("INFO", logger="psann"):
        est = _est(PSANNRegressor, mixed_precision=True).fit(X, np.ones(16))
    assert est.amp_["enabled"] is False
    assert "not active" in caplog.text


def test_warm_start_uses_the_hisso_mixed_precision_setting():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(60, 3)).astype(np.float32)
    prices = np.cumprod(1 + 0.01 * rng.normal(size=(60, 2)), axis=0).astype(np.float32)
    seen = []

    class Phases(Callback):
        def on_train_begin(self, loop, info):
            seen.append((loop.config.phase, loop.amp_active))

    opts = dict(window=6, batch_episodes=4, updates_per_epoch=2, mixed_precision=True, amp_dtype="bfloat16",
                supervised={"epochs": 1, "batch_size": 16})
    _est(PSANNRegressor).fit(X, rng.normal(size=(60, 2)), hisso=True, hisso_options=opts, context=prices, callbacks=[Phases()])
    assert seen == [("warm_start", True), ("hisso", True)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_cuda_autocast_in_supervised_fits_of_windows_counts_skipped_steps(amp_dtype):
    X = np.random.default_rng(10).normal(size=(64, 4, 32)).astype(np.float32)
    est = _est(WaveResNetRegressor, device="cuda", mixed_precision=True, amp_dtype=amp_dtype)
    est.fit(X, X.mean(axis=(1, 2)), callbacks=[InfGradientAt(step=1)])
    assert est.amp_["enabled"] is True and est.amp_["dtype"] == amp_dtype
    assert est.amp_["skipped_steps"] >= 1
    assert np.isfinite(est.predict(X)).all()
