"""LSM expanders: specs, masks, freezing, the expander's learning rate, and estimator wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from psann import (
    LSMConv2dExpander,
    LSMExpander,
    LSMSpec,
    PSANNRegressor,
    ResConvPSANNRegressor,
    WaveResNetRegressor,
    build_expander,
)
from psann.errors import ValidationError
from psann.hisso import HISSOOptions
from psann.runconfig import ConfigError, apply_overrides, parse_run_config
from psann.training import Callback

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 5)).astype(np.float32)
Y = (X[:, 0] - 0.5 * X[:, 1]).astype(np.float32)
TINY = dict(hidden_layers=1, hidden_units=8, epochs=3, batch_size=32, device="cpu", random_state=0, w0=1.0)


class GroupRates(Callback):
    """Records, per epoch, the phase and every optimiser group's (name, lr) after the epoch."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str, list[tuple[str | None, float]]]] = []

    def on_epoch_end(self, loop, record):
        groups = [(g.get("name"), float(g["lr"])) for g in loop.optimizer.param_groups]
        self.epochs.append((record["phase"], groups))


# -- specs and modules -----------------------------------------------------------------------------


def test_spec_fields_are_checked_and_keyed_by_field():
    with pytest.raises(ValidationError) as err:
        LSMSpec(output_dim=8, sparsity=1.0)
    assert err.value.key == "sparsity" and "[0, 1)" in str(err.value) and "1.0" in str(err.value)
    with pytest.raises(ValidationError) as err:
        LSMSpec(kind="conv2d", out_channels=4, kernel_size=2)
    assert err.value.key == "kernel_size"
    with pytest.raises(ValidationError) as err:
        LSMSpec(kind="dense")
    assert err.value.key == "output_dim"
    with pytest.raises(ValidationError) as err:
        LSMSpec(output_dim=8, nonlinearity="gelu")
    assert err.value.key == "nonlinearity" and "'gelu'" in str(err.value)


def test_build_expander_keys_errors_under_expander_with_a_hint():
    with pytest.raises(ValidationError) as err:
        build_expander({"output_dim": 8, "sparsty": 0.5}, 4)
    assert err.value.key == "expander.sparsty" and "did you mean 'sparsity'" in str(err.value)
    with pytest.raises(ValidationError) as err:
        build_expander({"output_dim": 0}, 4)
    assert err.value.key == "expander.output_dim"
    with pytest.raises(TypeError) as err:
        build_expander(64, 4)
    assert err.value.key == "expander"


def test_masks_have_the_requested_density_and_are_reproducible():
    spec = LSMSpec(output_dim=200, hidden_layers=2, hidden_units=100, sparsity=0.75, random_state=3)
    a, b = build_expander(spec, 50), build_expander(spec, 50)
    assert [m.shape for m in a.masks()] == [(100, 50), (200, 100)]
    assert a.density() == pytest.approx(0.25, abs=0.02)
    assert all(torch.equal(ma, mb) for ma, mb in zip(a.masks(), b.masks()))
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in a.masks())
    other = build_expander(LSMSpec(output_dim=200, hidden_layers=2, hidden_units=100, sparsity=0.75, random_state=4), 50)
    assert not torch.equal(a.masks()[0], other.masks()[0])
    # Every output keeps at least one input, even at high sparsity on a narrow input.
    sparse = build_expander({"output_dim": 64, "sparsity": 0.95, "random_state": 0}, 2)
    assert bool((sparse.masks()[0].sum(dim=1) >= 1).all())


@pytest.mark.parametrize("nonlinearity", ["sine", "tanh", "relu"])
def test_dense_expander_maps_rows_and_channels_first_tensors(nonlinearity):
    expander = LSMExpander(6, {"output_dim": 10, "nonlinearity": nonlinearity, "random_state": 0})
    assert expander(torch.randn(4, 6)).shape == (4, 10)
    assert expander(torch.randn(4, 6, 7)).shape == (4, 10, 7)  # per position along the channels
    if nonlinearity == "relu":
        assert bool((expander(torch.randn(4, 6)) >= 0).all())
    with pytest.raises(ValidationError, match=r"expected inputs with 6 features, got shape \(4, 5\)"):
        expander(torch.randn(4, 5))


def test_masked_weights_get_no_gradient():
    expander = LSMExpander(8, {"output_dim": 16, "sparsity": 0.6, "random_state": 1})
    expander(torch.randn(32, 8)).pow(2).sum().backward()
    grad, mask = expander.weights[0].grad, expander.masks()[0]
    assert bool((grad[mask == 0] == 0).all()) and bool((grad[mask == 1] != 0).any())


def test_conv2d_expander_keeps_positions_and_masks_kernels():
    expander = LSMConv2dExpander(3, {"kind": "conv2d", "out_channels": 5, "kernel_size": 3, "sparsity": 0.5, "random_state": 0})
    assert expander(torch.randn(2, 3, 6, 7)).shape == (2, 5, 6, 7)
    assert expander.masks()[0].shape == (5, 3, 3, 3)
    with pytest.raises(ValidationError, match=r"expects \(N, 3, H, W\) inputs, got shape \(2, 3, 6\)"):
        expander(torch.randn(2, 3, 6))


def test_frozen_spec_makes_weights_untrainable():
    expander = build_expander({"output_dim": 4, "freeze": True}, 3)
    assert not any(p.requires_grad for p in expander.parameters())


# -- estimators ------------------------------------------------------------------------------------


def test_expander_output_width_becomes_the_network_input_width():
    est = PSANNRegressor(**TINY, expander={"output_dim": 24, "sparsity": 0.5}).fit(X, Y)
    assert est.model_.expander.out_features == 24 and est.model_.net.dim_in == 24
    assert est.model_.expander.in_features == 5 and est.n_features_in_ == 5
    assert est.predict(X).shape == (64,)
    assert est.expander == {"output_dim": 24, "sparsity": 0.5}  # the parameter is left as given


def test_masks_and_frozen_weights_are_unchanged_by_fit():
    est = PSANNRegressor(**TINY, expander=LSMSpec(output_dim=12, hidden_layers=2, random_state=5, freeze=True))
    est.fit(X, Y)
    reference = build_expander(LSMSpec(output_dim=12, hidden_layers=2, random_state=5, freeze=True), 5)
    fitted = est.model_.expander
    for name, tensor in reference.state_dict().items():
        assert torch.equal(fitted.state_dict()[name], tensor), name
    assert est.history_[0]["train_loss"] != est.history_[-1]["train_loss"]  # the network did train


def test_trainable_expander_changes_only_unmasked_weights():
    spec = LSMSpec(output_dim=12, sparsity=0.7, random_state=2)
    est = PSANNRegressor(**TINY, expander=spec).fit(X, Y)
    reference = build_expander(spec, 5)
    mask = est.model_.expander.masks()[0]
    assert torch.equal(mask, reference.masks()[0])
    moved = est.model_.expander.weights[0].detach() != reference.weights[0]
    assert bool(moved[mask == 1].any())
    assert not bool(moved[mask == 0].any())


def test_lsm_lr_gives_the_expander_its_own_parameter_group():
    rates = GroupRates()
    PSANNRegressor(**TINY, lr=1e-3, expander={"output_dim": 8}, lsm_lr=0.02).fit(X, Y, callbacks=[rates])
    for _, groups in rates.epochs:
        assert groups[0] == (None, pytest.approx(1e-3))
        assert groups[1] == ("expander", pytest.approx(0.02))


def test_lsm_lr_follows_the_lr_schedule_at_its_own_scale():
    rates = GroupRates()
    params = dict(TINY, epochs=4, lr=1e-3, lr_schedule="cosine")
    PSANNRegressor(**params, expander={"output_dim": 8}, lsm_lr=1e-2).fit(X, Y, callbacks=[rates])
    for _, groups in rates.epochs:
        assert groups[1][1] == pytest.approx(10 * groups[0][1])
    assert rates.epochs[-1][1][0][1] < rates.epochs[0][1][0][1]  # the schedule did decay


def test_without_lsm_lr_the_expander_trains_at_the_estimator_lr():
    rates = GroupRates()
    PSANNRegressor(**TINY, lr=2e-3, expander={"output_dim": 8}).fit(X, Y, callbacks=[rates])
    assert all(groups == [(None, pytest.approx(2e-3))] for _, groups in rates.epochs)


def test_lsm_lr_is_honoured_in_the_hisso_warm_start():
    steps = 80
    prices = np.cumprod(1 + 0.01 * RNG.normal(size=(steps, 2)), axis=0).astype(np.float32)
    features = RNG.normal(size=(steps, 3)).astype(np.float32)
    y = np.tile([[1.0, 0.0]], (steps, 1)).astype(np.float32)
    opts = HISSOOptions.from_mapping(
        {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "supervised": {"epochs": 2, "batch_size": 16}}
    )
    rates = GroupRates()
    est = PSANNRegressor(**dict(TINY, epochs=1), lr=1e-3, expander={"output_dim": 8}, lsm_lr=5e-3)
    est.fit(features, y, hisso=True, hisso_options=opts, context=prices, callbacks=[rates])
    assert [phase for phase, _ in rates.epochs] == ["warm_start", "warm_start", "hisso"]
    for _, groups in rates.epochs:
        assert groups[1] == ("expander", pytest.approx(5e-3))


def test_frozen_expander_has_no_group_even_with_lsm_lr():
    rates = GroupRates()
    PSANNRegressor(**TINY, expander={"output_dim": 8, "freeze": True}, lsm_lr=0.1).fit(X, Y, callbacks=[rates])
    assert all(len(groups) == 1 for _, groups in rates.epochs)


def test_lsm_lr_without_an_expander_is_refused():
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(**TINY, lsm_lr=0.01).fit(X, Y)
    assert err.value.key == "lsm_lr" and "without an expander" in str(err.value)
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(**TINY, expander={"output_dim": 8}, lsm_lr=0.0).fit(X, Y)
    assert err.value.key == "lsm_lr"


def test_bad_expander_specs_are_refused_before_training_with_their_field():
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(**TINY, expander={"output_dim": 8, "sparsity": -0.1}).fit(X, Y)
    assert err.value.key == "expander.sparsity"
    with pytest.raises(TypeError) as err:
        PSANNRegressor(**TINY, expander="big").fit(X, Y)
    assert err.value.key == "expander"


def test_conv2d_expander_on_rows_is_refused_naming_the_shape():
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(**TINY, expander={"kind": "conv2d", "out_channels": 4}).fit(X, Y)
    assert err.value.key == "expander.kind" and "(5,)" in str(err.value)


def test_conv2d_expander_feeds_res_conv_its_channels():
    images = RNG.normal(size=(16, 2, 5, 5)).astype(np.float32)
    est = ResConvPSANNRegressor(
        conv_channels=4, depth=1, epochs=2, device="cpu", random_state=0,
        expander={"kind": "conv2d", "out_channels": 6, "sparsity": 0.5},
    ).fit(images, images.mean(axis=(1, 2, 3)))
    assert est.model_.net.dim_in == 6 and est.predict(images).shape == (16,)


def test_dense_expander_on_sequences_expands_channels_per_position():
    seqs = RNG.normal(size=(16, 3, 8)).astype(np.float32)
    y = seqs.mean(axis=(1, 2))
    conv = ResConvPSANNRegressor(conv_channels=4, depth=1, epochs=2, device="cpu", random_state=0, expander={"output_dim": 7})
    assert conv.fit(seqs, y).model_.net.dim_in == 7
    wave = WaveResNetRegressor(hidden_units=8, depth=1, epochs=2, device="cpu", random_state=0, expander={"output_dim": 9})
    assert wave.fit(seqs, y).model_.net.dim_in == 9  # flattened 24 features -> 9


def test_a_custom_module_expander_is_copied_and_sets_the_width():
    module = nn.Sequential(nn.Linear(5, 11), nn.Tanh())
    est = PSANNRegressor(**TINY, expander=module).fit(X, Y)
    assert est.model_.net.dim_in == 11
    assert est.model_.expander is not module and est.expander is module
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(**TINY, expander=nn.Linear(4, 3)).fit(X, Y)
    assert err.value.key == "expander" and "(N, 5)" in str(err.value)


def test_clone_keeps_the_expander_parameter():
    est = PSANNRegressor(**TINY, expander={"output_dim": 8}, lsm_lr=0.01)
    params = clone(est).get_params()
    assert params["expander"] == {"output_dim": 8} and params["lsm_lr"] == 0.01


# -- run configs -----------------------------------------------------------------------------------

RUN = {
    "estimator": {"target": "psann.PSANNRegressor", "params": {"epochs": 2, "expander": {"output_dim": 64, "sparsity": 0.8}}},
    "hisso": {"enabled": True, "window": 8, "reward": "portfolio"},
    "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 100}},
}


def test_run_configs_take_an_expander_mapping_and_nested_overrides():
    config = parse_run_config(RUN)
    assert config.estimator_params["expander"] == {"output_dim": 64, "sparsity": 0.8}
    swept = apply_overrides(RUN, {"estimator.params.expander.output_dim": 16, "estimator.params.lsm_lr": 0.01})
    params = parse_run_config(swept).estimator_params
    assert params["expander"] == {"output_dim": 16, "sparsity": 0.8} and params["lsm_lr"] == 0.01


def test_a_bad_expander_field_in_a_run_config_names_its_key_path():
    bad = apply_overrides(RUN, {"estimator.params.expander.sparsity": 1.5})
    with pytest.raises(ConfigError) as err:
        parse_run_config(bad)
    assert err.value.key == "estimator.params.expander.sparsity"


def test_resume_with_an_expander_group_reproduces_the_uninterrupted_fit():
    class Capture(Callback):
        state = None

        def on_epoch_end(self, loop, record):
            if record["epoch"] == 2:
                self.state = loop.snapshot()

    make = lambda: PSANNRegressor(**dict(TINY, epochs=4), expander={"output_dim": 8}, lsm_lr=0.01)  # noqa: E731
    capture = Capture()
    full = make().fit(X, Y, callbacks=[capture])
    resumed = make().fit(X, Y, resume_state=capture.state)
    np.testing.assert_array_equal(resumed.predict(X), full.predict(X))


def test_lsm_lr_under_cpu_bfloat16_mixed_precision_trains_both_groups():
    rates = GroupRates()
    est = PSANNRegressor(**TINY, expander={"output_dim": 8, "random_state": 0}, lsm_lr=0.02,
                         mixed_precision=True, amp_dtype="bfloat16").fit(X, Y, callbacks=[rates])
    assert est.amp_["enabled"] and est.amp_["skipped_steps"] == 0
    assert rates.epochs[-1][1][1] == ("expander", pytest.approx(0.02))
    reference = build_expander({"output_dim": 8, "random_state": 0}, 5)
    assert not torch.equal(est.model_.expander.weights[0].detach(), reference.weights[0])
