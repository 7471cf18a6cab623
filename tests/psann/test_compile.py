"""compile=True: training through torch.compile, counted and timed, with plain state_dicts."""

import numpy as np
import pytest
import torch

from psann.estimators import PSANNRegressor, WaveResNetRegressor

pytestmark = pytest.mark.slow  # each fit compiles graphs with inductor: tens of seconds on 2 cores


def _data(n=128, features=4, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)
    return X, np.sin(X.sum(axis=1))


def test_compiled_fit_matches_the_eager_fit_and_saves_plain_state_dicts(tmp_path):
    X, y = _data()
    kwargs = dict(hidden_layers=1, hidden_units=16, epochs=3, batch_size=32, w0=1.0, random_state=0, device="cpu")
    eager = PSANNRegressor(**kwargs).fit(X, y)
    compiled = PSANNRegressor(compile=True, **kwargs).fit(X, y)
    np.testing.assert_allclose(compiled.predict(X), eager.predict(X), rtol=1e-3, atol=1e-4)
    assert compiled.compile_["enabled"] is True and compiled.compile_["graphs"] >= 1
    assert compiled.compile_["seconds"] > 0
    assert compiled.history_[-1]["compiled_graphs"] == compiled.compile_["graphs"]
    assert all("_orig_mod" not in key for key in compiled.model_.state_dict())
    compiled.save(tmp_path / "model")
    np.testing.assert_array_equal(PSANNRegressor.load(tmp_path / "model").predict(X), compiled.predict(X))


def test_w0_warm_up_does_not_recompile_every_epoch():
    X, y = _data()
    kwargs = dict(hidden_units=16, depth=1, epochs=4, batch_size=32, random_state=0, device="cpu", compile=True)
    steady = WaveResNetRegressor(**kwargs).fit(X, y)
    warming = WaveResNetRegressor(w0_warmup_epochs=4, **kwargs).fit(X, y)
    ramp = [r["first_layer_w0"] for r in warming.history_]
    assert len(set(ramp)) == 4  # w0 changed every epoch
    assert warming.compile_["graphs"] == steady.compile_["graphs"]


def test_progressive_depth_recompiles_only_when_the_depth_changes():
    X, y = _data()
    kwargs = dict(hidden_units=16, epochs=4, batch_size=32, random_state=0, device="cpu", compile=True)
    fixed = WaveResNetRegressor(depth=1, **kwargs).fit(X, y)
    grown = WaveResNetRegressor(depth=2, progressive_depth_initial=1, progressive_depth_interval=2, **kwargs).fit(X, y)
    assert grown.model_.net.depth == 2
    assert grown.compile_["graphs"] == fixed.compile_["graphs"] + 1  # one more graph for the one change


def test_a_compiled_hisso_fit_records_compile_figures():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3)).astype(np.float32)
    prices = np.cumprod(1 + 0.01 * rng.normal(size=(100, 2)), axis=0).astype(np.float32)
    est = PSANNRegressor(hidden_layers=1, hidden_units=8, epochs=2, random_state=0, device="cpu", compile=True)
    est.fit(X, hisso=True, hisso_options=dict(window=8, batch_episodes=4, updates_per_epoch=2), context=prices)
    assert est.compile_["graphs"] >= 1 and est.compile_["seconds"] > 0
    assert torch.isfinite(est.predict_tensor(X)).all()
