"""StateConfig and StateController: the formula, commit/reset, warnings, axes; stateful networks,
the loop's commit seam and the reset cadences of supervised fits and HISSO."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from psann.errors import ValidationError
from psann.estimators import PSANNRegressor, ResPSANNRegressor
from psann.models import PSANNNet, ResConvPSANNNet, ResPSANNNet, WaveResNet
from psann.models._common import Stateful
from psann.state import StateConfig, StateController
from psann.supervised import SupervisedPhase
from psann.training import Callback, LoopConfig, TrainingLoop

CPU = torch.device("cpu")


# -- StateConfig -----------------------------------------------------------------------------------


def test_state_config_defaults_and_round_trip():
    cfg = StateConfig()
    assert (cfg.rho, cfg.beta, cfg.init, cfg.max_abs, cfg.detach) == (0.95, 1.0, 1.0, 5.0, True)
    custom = StateConfig(rho=0.5, beta=2.0, init=-1.5, max_abs=3.0, detach=False)
    assert StateConfig.from_mapping(custom.to_dict()) == custom
    assert StateConfig.coerce(None) is None and StateConfig.coerce(custom) is custom
    assert StateConfig.coerce({"rho": 0.0}) == StateConfig(rho=0.0)


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("rho", 1.0, "[0, 1)"),
        ("rho", -0.1, "[0, 1)"),
        ("rho", True, "[0, 1)"),
        ("beta", -1.0, ">= 0"),
        ("beta", math.inf, ">= 0"),
        ("init", math.nan, "finite"),
        ("init", "1", "finite"),
        ("max_abs", 0.0, "> 0"),
        ("max_abs", -2.0, "> 0"),
        ("detach", "yes", "true or false"),
    ],
)
def test_state_config_refuses_bad_fields_naming_them(field, value, expected):
    with pytest.raises(ValidationError) as caught:
        StateConfig(**{field: value})
    assert caught.value.key == field
    assert expected in str(caught.value) and repr(value)[:3] in str(caught.value)
    with pytest.raises(ValidationError) as mapped:
        StateConfig.from_mapping({field: value})
    assert mapped.value.key == f"state.{field}"


def test_state_config_mapping_with_unknown_key_suggests_the_field():
    with pytest.raises(ValidationError) as caught:
        StateConfig.coerce({"rhoo": 0.5})
    assert caught.value.key == "state.rhoo"
    assert "did you mean 'rho'" in str(caught.value)
    with pytest.raises(ValidationError) as wrong_type:
        StateConfig.coerce(0.5)
    assert wrong_type.value.key == "state" and isinstance(wrong_type.value, TypeError)


# -- the controller ----------------------------------------------------------------------------------


def _hand_next_state(state, mean_abs, cfg):
    return [cfg.max_abs * math.tanh((cfg.rho * s + (1 - cfg.rho) * cfg.beta * m) / cfg.max_abs) for s, m in zip(state, mean_abs)]


def test_controller_multiplies_by_state_and_stages_the_hand_computed_update():
    cfg = StateConfig(rho=0.5, beta=2.0, init=1.5, max_abs=4.0)
    ctrl = StateController(3, cfg)
    y = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -0.5]])
    out = ctrl.apply(y, feature_dim=-1)
    assert torch.allclose(out, y * 1.5)
    # m = mean over the batch of |y * s|, per feature.
    mean_abs = [(1.0 + 3.0) / 2 * 1.5, (2.0 + 0.0) / 2 * 1.5, (0.5 + 0.5) / 2 * 1.5]
    expected = _hand_next_state([1.5, 1.5, 1.5], mean_abs, cfg)
    assert torch.allclose(ctrl.staged, torch.tensor(expected), atol=1e-6)
    assert torch.equal(ctrl.state, torch.full((3,), 1.5))  # staged, not yet current
    ctrl.commit()
    assert torch.allclose(ctrl.state, torch.tensor(expected), atol=1e-6)
    # The next forward uses the committed state, and the next update starts from it.
    y2 = torch.ones(4, 3)
    out2 = ctrl.apply(y2, -1)
    assert torch.allclose(out2, torch.tensor(expected).expand(4, 3), atol=1e-6)
    expected2 = _hand_next_state(expected, [abs(s) for s in expected], cfg)
    ctrl.commit()
    assert torch.allclose(ctrl.state, torch.tensor(expected2), atol=1e-6)


def test_controller_negative_and_positive_feature_axes_agree():
    cfg = StateConfig(rho=0.8, init=2.0)
    y = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    a, b = StateController(3, cfg), StateController(3, cfg)
    out_a, out_b = a.apply(y, feature_dim=1), b.apply(y, feature_dim=-2)
    assert torch.equal(out_a, out_b) and torch.equal(out_a, y * 2.0)
    # m is the mean over every axis but the feature axis (batch and positions).
    m = (y * 2.0).abs().mean(dim=(0, 2))
    assert torch.allclose(a.staged, 5.0 * torch.tanh((0.8 * 2.0 + 0.2 * m) / 5.0))
    assert torch.equal(a.staged, b.staged)
    # A per-channel controller as a module (feature_dim fixed at construction) does the same.
    c = StateController(3, cfg, feature_dim=1)
    assert torch.equal(c(y), out_a)


def test_controller_refuses_bad_axes_and_sizes_naming_them():
    ctrl = StateController(3)
    with pytest.raises(ValidationError) as axis:
        ctrl.apply(torch.zeros(2, 3), feature_dim=2)
    assert axis.value.key == "feature_dim" and "[-2, 1]" in str(axis.value)
    with pytest.raises(ValidationError) as size:
        ctrl.apply(torch.zeros(2, 4), feature_dim=-1)
    assert size.value.key == "y" and "expected 3 features" in str(size.value) and "(2, 4)" in str(size.value)
    for bad, key in [(dict(features=0), "features"), (dict(features=3, feature_dim=1.0), "feature_dim")]:
        with pytest.raises(ValidationError) as built:
            StateController(**bad)
        assert built.value.key == key


def test_update_false_stages_nothing_and_commit_without_staging_is_a_no_op():
    ctrl = StateController(2, StateConfig(init=0.5))
    ctrl.apply(torch.ones(3, 2), -1, update=False)
    assert ctrl.staged is None
    ctrl.commit()
    assert torch.equal(ctrl.state, torch.full((2,), 0.5))
    ctrl.apply(torch.ones(3, 2), -1)
    ctrl.commit()
    after = ctrl.state.clone()
    ctrl.commit()  # nothing staged since: unchanged
    assert torch.equal(ctrl.state, after) and not torch.equal(after, torch.full((2,), 0.5))


def test_reset_defaults_to_the_current_mean_and_reset_to_init_restores_init():
    ctrl = StateController(3, StateConfig(init=1.0))
    ctrl.reset([0.5, 1.0, 3.0])
    assert torch.equal(ctrl.state, torch.tensor([0.5, 1.0, 3.0]))
    ctrl.reset()
    assert torch.allclose(ctrl.state, torch.full((3,), 1.5))
    ctrl.reset(-2.0)
    assert torch.equal(ctrl.state, torch.full((3,), -2.0))
    ctrl.apply(torch.ones(2, 3), -1)
    ctrl.reset_to_init()  # a reset drops what was staged: a later commit cannot undo it
    ctrl.commit()
    assert torch.equal(ctrl.state, torch.ones(3))
    ctrl.reset(torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(ctrl.state, torch.tensor([0.0, 1.0, 2.0]))
    for bad in (math.nan, [1.0, 2.0], [1.0, math.inf, 2.0], "a", True, torch.tensor([1.0, 2.0]), torch.tensor(math.nan)):
        with pytest.raises(ValidationError) as caught:
            ctrl.reset(bad)
        assert caught.value.key == "value"


def test_state_is_a_buffer_saved_with_the_state_dict():
    ctrl = StateController(2)
    ctrl.reset([0.25, 0.75])
    other = StateController(2)
    other.load_state_dict(ctrl.state_dict())
    assert list(ctrl.state_dict()) == ["state"]
    assert torch.equal(other.state, torch.tensor([0.25, 0.75]))


def test_detach_controls_whether_gradients_reach_the_state():
    y = torch.ones(2, 2, requires_grad=True)
    for detach, reaches in [(True, False), (False, True)]:
        ctrl = StateController(2, StateConfig(detach=detach))
        ctrl.state.requires_grad_(True)
        ctrl.apply(y, -1).sum().backward()
        assert (ctrl.state.grad is not None) is reaches
    assert torch.equal(y.grad, torch.full((2, 2), 2.0))  # d(y*s)/dy = s = 1, summed over the two runs


def test_saturation_warns_once():
    ctrl = StateController(2, StateConfig(rho=0.5, beta=10.0, max_abs=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            ctrl.apply(torch.full((4, 2), 5.0), -1)
            ctrl.commit()
    saturation = [w for w in caught if "saturating" in str(w.message)]
    assert len(saturation) == 1 and issubclass(saturation[0].category, RuntimeWarning)
    assert float(ctrl.state.abs().max()) >= 0.98
    assert ctrl.warned_saturation and not ctrl.warned_collapse


def test_collapse_warns_once_when_the_mean_falls_below_1e_3():
    ctrl = StateController(2, StateConfig(rho=0.5, init=1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        commits_to_warning = None
        for i in range(30):
            ctrl.apply(torch.zeros(3, 2), -1)  # no activity: the state halves (nearly) each commit
            ctrl.commit()
            if commits_to_warning is None and caught:
                commits_to_warning = i + 1
    collapse = [w for w in caught if "vanishing" in str(w.message)]
    assert len(collapse) == 1
    assert commits_to_warning == 10  # 0.5 ** 10 < 1e-3 < 0.5 ** 9 (tanh shrinks a little faster)
    assert not ctrl.warned_saturation


def test_module_apply_traversal_still_works_through_a_controller():
    net = PSANNNet(2, 1, hidden_layers=1, hidden_units=4, state=StateConfig())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert "StateController" in seen and seen[-1] == "PSANNNet"


# -- stateful networks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, x, controllers",
    [
        (lambda s: PSANNNet(3, 2, hidden_layers=2, hidden_units=4, state=s), torch.randn(5, 3), 2),
        (lambda s: ResPSANNNet(3, 2, hidden_layers=2, hidden_units=4, state=s), torch.randn(5, 3), 5),
        (lambda s: WaveResNet(3, 2, hidden_units=4, depth=2, state=s), torch.randn(5, 3), 5),
        (lambda s: ResConvPSANNNet(3, 2, conv_channels=4, depth=1, state=s), torch.randn(5, 3, 7), 3),
    ],
    ids=["dense", "residual", "wave", "resconv"],
)
def test_networks_put_a_controller_after_each_sine_layer(build, x, controllers):
    torch.manual_seed(0)
    plain = build(None)
    torch.manual_seed(0)
    stateful = build(StateConfig(init=1.0))
    assert not plain.stateful and stateful.stateful
    assert len(stateful.state_controllers()) == controllers
    # A stateless network's weights keep their names; init=1 makes the stateful one compute the same.
    weights = {k: v for k, v in stateful.state_dict().items() if not k.endswith(".state")}
    assert list(weights) == list(plain.state_dict())
    assert torch.allclose(plain(x), stateful(x))
    if isinstance(stateful, ResConvPSANNNet):
        assert all(c.feature_dim == 1 for c in stateful.state_controllers())
    stateful.commit_state()
    assert any(not torch.equal(c.state, torch.ones_like(c.state)) for c in stateful.state_controllers())
    stateful.reset_state()
    assert all(torch.equal(c.state, torch.ones_like(c.state)) for c in stateful.state_controllers())


def test_wave_resnet_blocks_added_later_are_stateful_too():
    net = WaveResNet(2, 1, hidden_units=4, depth=1, state=StateConfig())
    net.add_blocks(2)
    assert len(net.state_controllers()) == 1 + 2 * 3


def test_training_loop_commits_the_state_after_every_optimizer_step(monkeypatch):
    torch.manual_seed(0)
    net = PSANNNet(2, 1, hidden_layers=1, hidden_units=4, state=StateConfig(rho=0.5))
    commits = []
    original = StateController.commit

    def counting(self):
        # The weights have moved before the state does: the staged state is still pending here.
        commits.append(self.staged is not None)
        original(self)

    monkeypatch.setattr(StateController, "commit", counting)
    X, y = torch.randn(32, 2), torch.randn(32, 1)
    phase = SupervisedPhase(X, y, batch_size=8, generator=torch.Generator().manual_seed(0), stateful=True, state_reset="none")
    TrainingLoop(net, LoopConfig(epochs=2), device=CPU).run(phase)
    assert commits == [True] * 8  # one controller, 4 steps per epoch, 2 epochs
    assert not torch.equal(net.states[0].state, torch.ones(4))


class _Recorder(Callback):
    def __init__(self):
        self.infos = []

    def on_train_begin(self, loop, info):
        self.infos.append(info)


# 2 epochs of 4 batches, no validation; a fit whose cadence resets also leaves the model reset (+1).
@pytest.mark.parametrize("cadence, resets", [("batch", 2 * 4 + 1), ("epoch", 2 + 1), ("none", 0)])
def test_estimator_state_reset_sets_the_supervised_cadence(monkeypatch, cadence, resets):
    calls = []
    original = Stateful.reset_state
    monkeypatch.setattr(Stateful, "reset_state", lambda self: (calls.append(1), original(self)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2)).astype(np.float32)
    recorder = _Recorder()
    est = PSANNRegressor(hidden_layers=1, hidden_units=4, epochs=2, batch_size=16, state={"rho": 0.9},
                         state_reset=cadence, device="cpu", random_state=0)
    est.fit(X, X.sum(1), callbacks=[recorder])
    assert len(calls) == resets
    assert recorder.infos[0]["shuffle"] is False and recorder.infos[0]["stateful"] is True
    assert recorder.infos[0]["state_reset"] == cadence


def test_hisso_resets_a_stateful_model_per_episode(monkeypatch):
    calls = []
    original = Stateful.reset_state
    monkeypatch.setattr(Stateful, "reset_state", lambda self: (calls.append(1), original(self)))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3)).astype(np.float32)
    prices = np.cumprod(1 + 0.01 * rng.normal(size=(80, 2)), axis=0).astype(np.float32)
    recorder = _Recorder()
    est = ResPSANNRegressor(hidden_layers=1, hidden_units=4, epochs=2, state={}, device="cpu", random_state=0)
    opts = dict(window=8, batch_episodes=4, updates_per_epoch=3, val_episodes=4)
    est.fit(X, hisso=True, hisso_options=opts, context=prices, validation_data=(X, None, prices), callbacks=[recorder])
    # Before every update (all of its episodes start together), before each validation pass, and
    # once after the fit (the fitted model is left reset).
    assert len(calls) == 2 * 3 + 2 + 1
    assert recorder.infos[0]["state_reset"].startswith("episode")
    assert np.isfinite(est.history_[-1]["reward_mean"])


def test_estimators_refuse_a_bad_state_config_naming_the_field():
    X = np.zeros((8, 2), dtype=np.float32)
    for state, key in [({"rho": 1.5}, "state.rho"), ({"max_abs": 0}, "state.max_abs"), ({"bogus": 1}, "state.bogus"),
                       ("on", "state")]:
        with pytest.raises(ValidationError) as caught:
            PSANNRegressor(epochs=1, state=state, device="cpu").fit(X, X[:, 0])
        assert caught.value.key == key
