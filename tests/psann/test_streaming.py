"""Stateful estimators and streaming: sequence prediction, online updates, the optimiser-rebuild
rule, save/load parity and the shape errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from psann.errors import ValidationError
from psann.estimators import PSANNRegressor, ResConvPSANNRegressor, ResPSANNRegressor, WaveResNetRegressor
from psann.state import StateConfig

STATE = {"rho": 0.9, "beta": 1.5, "max_abs": 3.0}


def _series(n=48, features=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, (X @ np.arange(1, features + 1, dtype=np.float32)).astype(np.float32)


def _dense(**kwargs):
    params = dict(hidden_layers=1, hidden_units=6, epochs=2, batch_size=16, state=STATE, device="cpu", random_state=0)
    params.update(kwargs)
    return PSANNRegressor(**params)


def _ar1(phi, steps, rng):
    s = np.zeros(steps + 1, dtype=np.float32)
    for t in range(1, steps + 1):
        s[t] = phi * s[t - 1] + 0.3 * rng.normal()
    return s[:-1, None], s[1:]


# -- teacher forcing and online prediction ----------------------------------------------------------------


def test_predict_sequence_carries_the_state_from_row_to_row():
    X, y = _series()
    est = _dense().fit(X, y)
    controllers = est.model_.net.state_controllers()
    est.reset_state()
    first = est.predict_sequence(X[:10])
    assert first.shape == (10,)
    assert not torch.equal(controllers[0].state, torch.ones(6))  # the state moved with the rows
    # Carried state: the same rows predicted again from where the state is now give other values.
    again = est.predict_sequence(X[:10])
    assert not np.allclose(first, again, atol=1e-4)
    # Row 0 is predicted from the initial state, as predict (float64) does from the reset model.
    est.reset_state()
    assert np.allclose(first[0], est.predict(X[:1])[0], atol=1e-5)
    # Each row sees the state the rows before it left: predicting in two pieces equals one piece.
    est.reset_state()
    pieces = np.concatenate([est.predict_sequence(X[:4]), est.predict_sequence(X[4:10])])
    assert np.array_equal(pieces, first)


def test_online_prediction_equals_teacher_forcing_at_stream_lr_zero():
    X, y = _series(n=40)
    est = _dense(stream_lr=0.0).fit(X, y)
    before = {k: v.clone() for k, v in est.model_.state_dict().items() if not k.endswith(".state")}
    est.reset_state()
    forced = est.predict_sequence(X)
    est.reset_state()
    online = est.predict_sequence_online(X, y)
    assert np.array_equal(forced, online)
    after = {k: v for k, v in est.model_.state_dict().items() if not k.endswith(".state")}
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight moved at lr 0


def test_online_updates_change_the_weights_when_stream_lr_is_positive():
    X, y = _series(n=20)
    est = _dense(stream_lr=0.05).fit(X, y)
    est.reset_state()
    forced = est.predict_sequence(X)
    est.reset_state()
    online = est.predict_sequence_online(X, y)
    assert forced[0] == online[0]  # the first prediction comes before any update
    assert not np.allclose(forced[1:], online[1:])


def test_a_stateful_model_learns_an_ar1_process_online():
    # Fitted on an AR(1) with the opposite coefficient, then streamed over phi = +0.95: its
    # squared error over the second half of the stream is clearly below the first half's.
    rng = np.random.default_rng(1)
    X_fit, y_fit = _ar1(-0.95, 256, rng)
    X, y = _ar1(0.95, 300, rng)
    est = PSANNRegressor(hidden_layers=1, hidden_units=8, epochs=25, batch_size=64, lr=0.03, w0=1.0, device="cpu",
                         random_state=0, state={"rho": 0.5, "beta": 20.0, "max_abs": 2.0}, state_reset="batch",
                         stream_lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # this config saturates some states on purpose
        est.fit(X_fit, y_fit)
        assert est.score(X_fit, y_fit) > 0.7
        est.reset_state()
        pred = est.predict_sequence_online(X, y)
    errors = (pred - y) ** 2
    first, second = errors[:150].mean(), errors[150:].mean()
    assert second < 0.8 * first, (first, second)
    assert est.stream_optimizer_builds_ == 1


# -- streaming updates and the optimiser-rebuild rule -------------------------------------------------------


def test_step_takes_one_sample_or_a_batch_and_returns_the_loss_before_the_update():
    X, y = _series()
    est = _dense(stream_lr=0.01).fit(X, y)
    pred = est.predict_sequence(X[:1])  # advances the state once, like the step's forward will not
    est.reset_state()
    loss = est.step(X[0], y[0])
    assert np.isclose(loss, float((pred[0] - y[0]) ** 2), rtol=1e-4)
    batch_loss = est.step(X[:5], y[:5])
    assert isinstance(batch_loss, float) and np.isfinite(batch_loss)
    # A 2-D target fitted model takes (n_outputs,) per sample and (B, n_outputs) per batch.
    Y = np.stack([y, -y], axis=1)
    two = _dense(stream_lr=0.01).fit(X, Y)
    assert np.isfinite(two.step(X[0], Y[0])) and np.isfinite(two.step(X[:3], Y[:3]))


def test_streaming_optimizer_is_rebuilt_exactly_when_the_model_or_lr_changes():
    X, y = _series()
    est = _dense(stream_lr=0.01).fit(X, y)
    est.step(X[0], y[0])
    assert est.stream_optimizer_builds_ == 1
    optimizer = est._stream_opt
    for i in range(1, 4):
        est.step(X[i], y[i])
    est.predict_sequence_online(X[:3], y[:3])
    assert est.stream_optimizer_builds_ == 1 and est._stream_opt is optimizer  # same model, same lr
    est.set_params(stream_lr=0.02)  # the learning rate changed
    est.step(X[0], y[0])
    assert est.stream_optimizer_builds_ == 2 and est._stream_opt.param_groups[0]["lr"] == 0.02
    est.step(X[1], y[1])
    assert est.stream_optimizer_builds_ == 2
    est.set_params(stream_lr=None, lr=0.005)  # None streams at lr, which changed too
    est.step(X[2], y[2])
    assert est.stream_optimizer_builds_ == 3 and est._stream_opt.param_groups[0]["lr"] == 0.005
    est.fit(X, y)  # a new model
    est.step(X[0], y[0])
    assert est.stream_optimizer_builds_ == 4
    est.step(X[1], y[1])
    assert est.stream_optimizer_builds_ == 4


def test_streaming_optimizer_is_rebuilt_when_parameters_are_added():
    X, y = _series()
    est = WaveResNetRegressor(hidden_units=4, depth=1, epochs=1, state=STATE, device="cpu", random_state=0,
                              stream_lr=0.01).fit(X, y)
    est.step(X[0], y[0])
    est.step(X[1], y[1])
    assert est.stream_optimizer_builds_ == 1
    est.model_.net.add_blocks(1)  # progressive depth: new parameters the old optimiser does not know
    est.step(X[2], y[2])
    assert est.stream_optimizer_builds_ == 2


# -- save / load --------------------------------------------------------------------------------------------

_ESTIMATORS = [
    (lambda: PSANNRegressor(hidden_layers=2, hidden_units=6), (2,)),
    (lambda: ResPSANNRegressor(hidden_layers=1, hidden_units=6, drop_path=0.1), (2,)),
    (lambda: WaveResNetRegressor(hidden_units=6, depth=1), (2,)),
    (lambda: ResConvPSANNRegressor(conv_channels=4, depth=1), (2, 8)),
]


@pytest.mark.parametrize("build, sample", _ESTIMATORS, ids=["dense", "residual", "wave", "resconv"])
def test_save_load_parity_with_a_state_config(tmp_path, build, sample):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, *sample)).astype(np.float32)
    y = X.reshape(32, -1).sum(axis=1)
    est = build().set_params(epochs=2, batch_size=16, device="cpu", random_state=0, state=StateConfig(rho=0.8, beta=1.5))
    est.fit(X, y)
    est.predict_sequence(X[:5])  # move the state away from init: the saved file must carry it
    states = [c.state.clone() for c in est.model_.net.state_controllers()]
    assert states and not all(torch.equal(s, torch.ones_like(s)) for s in states)
    est.save(tmp_path / "model")
    loaded = type(est).load(tmp_path / "model")
    assert loaded.get_params()["state"] == StateConfig(rho=0.8, beta=1.5).to_dict()
    assert all(torch.equal(a, c.state) for a, c in zip(states, loaded.model_.net.state_controllers()))
    assert np.array_equal(est.predict(X), loaded.predict(X))
    assert np.array_equal(est.predict_sequence(X[5:12]), loaded.predict_sequence(X[5:12]))


def test_a_fit_that_resets_leaves_the_model_in_a_reset_state():
    X, y = _series()
    for cadence, reset in [("batch", True), ("epoch", True), ("none", False)]:
        est = _dense(state_reset=cadence).fit(X, y)
        at_init = all(torch.equal(c.state, torch.ones_like(c.state)) for c in est.model_.net.state_controllers())
        assert at_init is reset, cadence


# -- errors name the argument and the shape ----------------------------------------------------------------


def test_sequence_and_step_errors_name_the_argument_and_the_expected_shape():
    X, y = _series()
    est = _dense().fit(X, y)
    cases = [
        (lambda: est.predict_sequence(X[:, :1]), "X_seq", "(T, 2)"),
        (lambda: est.predict_sequence(X[0]), "X_seq", "(T, 2)"),
        (lambda: est.predict_sequence(X[:0]), "X_seq", "(T, 2)"),
        (lambda: est.predict_sequence([[1.0, 2.0], [3.0]]), "X_seq", "ragged"),
        (lambda: est.predict_sequence(np.full((3, 2), np.nan)), "X_seq", "NaN"),
        (lambda: est.predict_sequence_online(X[:5], y[:4]), "y_seq", "5 rows"),
        (lambda: est.predict_sequence_online(X[:5], np.zeros((5, 2))), "y_seq", "(5, 1)"),
        (lambda: est.step(X[0, :1], y[0]), "x", "(T, 2)"),
        (lambda: est.step(torch.zeros(3, 2, 2), y[:3]), "x", "(T, 2)"),
        (lambda: est.step(X[:3], y[:2]), "y", "3 rows"),
        (lambda: est.step(X[0], [1.0, 2.0]), "y", "(1, 1)"),
        (lambda: est.step(X[:2], [np.nan, 1.0]), "y", "NaN"),
    ]
    for call, key, text in cases:
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.key == key, (key, str(caught.value))
        assert text in str(caught.value), str(caught.value)


def test_stream_lr_is_checked_when_streaming_and_unfitted_estimators_refuse():
    X, y = _series()
    est = _dense().fit(X, y)
    est.set_params(stream_lr=-1.0)
    with pytest.raises(ValidationError) as caught:
        est.step(X[0], y[0])
    assert caught.value.key == "stream_lr"
    with pytest.raises(ValidationError) as at_fit:
        est.fit(X, y)
    assert at_fit.value.key == "stream_lr"
    fresh = _dense()
    for call in (lambda: fresh.predict_sequence(X), lambda: fresh.step(X[0], y[0]), fresh.reset_state):
        with pytest.raises(NotFittedError):
            call()


def test_stateless_estimators_stream_too():
    X, y = _series()
    est = PSANNRegressor(hidden_layers=1, hidden_units=6, epochs=2, device="cpu", random_state=0, stream_lr=0.0).fit(X, y)
    assert not est.stateful_
    assert np.allclose(est.predict_sequence(X), est.predict(X), atol=1e-5)
    assert np.array_equal(est.predict_sequence_online(X, y), est.predict_sequence(X))


def test_per_position_outputs_keep_their_shape_in_sequences():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3, 5)).astype(np.float32)
    y = X.mean(axis=1, keepdims=True)  # (N, 1, L): one output per position
    est = ResConvPSANNRegressor(conv_channels=4, depth=1, epochs=1, preserve_shape=True, state=STATE, device="cpu",
                                random_state=0, stream_lr=0.0).fit(X, y)
    est.reset_state()
    forced = est.predict_sequence(X[:4])
    assert forced.shape == (4, 1, 5)
    est.reset_state()
    assert np.array_equal(est.predict_sequence_online(X[:4], y[:4]), forced)
    assert np.isfinite(est.step(X[0], y[0]))
    with pytest.raises(ValidationError) as caught:
        est.step(X[0], y[0, :, :3])
    assert caught.value.key == "y"
