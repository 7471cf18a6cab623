"""The sine activation (DESIGN.md section 3) and the SIREN initialisation rule."""

import math

import pytest
import torch
from torch import nn

from psann.activations import SineActivation, SineConfig, SineLayer, inverse_softplus, siren_init_


def _hand(z: torch.Tensor, amplitude: float, frequency: float, decay: float, mode: str) -> torch.Tensor:
    g = {"abs": z.abs(), "relu": torch.relu(z), "none": torch.zeros_like(z)}[mode]
    return amplitude * torch.exp(-decay * g) * torch.sin((frequency + 1e-6) * z)


@pytest.mark.parametrize("mode", ["abs", "relu", "none"])
def test_activation_matches_hand_formula_for_each_decay_mode(mode):
    config = SineConfig(amplitude_init=1.5, frequency_init=2.0, decay_init=0.3, decay_mode=mode)
    act = SineActivation(3, config)
    z = torch.tensor([[-2.0, -0.5, 0.0], [0.25, 1.0, 3.0]])
    expected = _hand(z.double(), 1.5, 2.0, 0.3, mode).float()
    torch.testing.assert_close(act(z), expected, atol=1e-6, rtol=1e-5)


def test_decay_modes_differ_only_on_the_side_they_damp():
    z = torch.tensor([[-2.0, 2.0]])
    out = {m: SineActivation(2, SineConfig(decay_init=0.5, decay_mode=m))(z).detach() for m in ("abs", "relu", "none")}
    # relu damps only positive inputs, abs both sides, none neither.
    torch.testing.assert_close(out["relu"][0, 0], out["none"][0, 0])
    torch.testing.assert_close(out["relu"][0, 1], out["abs"][0, 1])
    assert abs(float(out["abs"][0, 0])) < abs(float(out["none"][0, 0]))


def test_parameters_start_at_their_init_values_through_softplus():
    act = SineActivation(4, SineConfig(amplitude_init=0.7, frequency_init=25.0, decay_init=0.1))
    torch.testing.assert_close(act.amplitude, torch.full((4,), 0.7))
    torch.testing.assert_close(act.frequency, torch.full((4,), 25.0 + 1e-6))
    torch.testing.assert_close(act.decay, torch.full((4,), 0.1))
    assert inverse_softplus(30.0) == 30.0  # large values: softplus is the identity


def test_only_the_learnable_subset_are_parameters_and_get_gradients():
    act = SineActivation(3, SineConfig(learnable=("frequency",)))
    assert {name for name, _ in act.named_parameters()} == {"_frequency"}
    assert {name for name, _ in act.named_buffers()} == {"_amplitude", "_decay"}
    act(torch.randn(5, 3)).sum().backward()
    assert act._frequency.grad is not None and act._frequency.grad.abs().sum() > 0
    assert not act._amplitude.requires_grad and act._amplitude.grad is None
    assert not act._decay.requires_grad and act._decay.grad is None


@pytest.mark.parametrize(
    "learnable, expected",
    [("all", {"_amplitude", "_frequency", "_decay"}), ("none", set()), (["decay", "amplitude"], {"_amplitude", "_decay"})],
)
def test_learnable_accepts_all_none_and_subsets(learnable, expected):
    act = SineActivation(2, SineConfig(learnable=learnable))
    assert {name for name, _ in act.named_parameters()} == expected


def test_unknown_learnable_name_is_refused_with_the_name():
    with pytest.raises(ValueError, match="phase"):
        SineConfig(learnable=("amplitude", "phase"))


def test_bounds_clamp_the_mapped_parameters():
    config = SineConfig(amplitude_init=5.0, frequency_init=1.0, bounds={"amplitude": (None, 2.0), "frequency": (3.0, None)})
    act = SineActivation(2, config)
    torch.testing.assert_close(act.amplitude, torch.full((2,), 2.0))
    torch.testing.assert_close(act.frequency, torch.full((2,), 3.0))
    z = torch.tensor([[0.4, -0.2]])
    torch.testing.assert_close(act(z), _hand(z, 2.0, 3.0 - 1e-6, 0.1, "abs"))


@pytest.mark.parametrize(
    "bounds, match",
    [({"amplitude": (2.0, 1.0)}, "low > high"), ({"phase": (0.0, 1.0)}, "phase"), ({"decay": (1.0,)}, "pair")],
)
def test_bad_bounds_are_refused(bounds, match):
    with pytest.raises(ValueError, match=match):
        SineConfig(bounds=bounds)


def test_config_refuses_non_positive_inits_and_unknown_modes():
    with pytest.raises(ValueError, match="SineConfig.decay_init"):
        SineConfig(decay_init=0.0)
    with pytest.raises(ValueError, match=r"decay_mode must be one of \['abs', 'relu', 'none'\]"):
        SineConfig(decay_mode="square")


def _distinct_amplitudes(act: SineActivation, values):
    with torch.no_grad():
        act._amplitude.copy_(torch.tensor([inverse_softplus(v) for v in values]))


@pytest.mark.parametrize(
    "shape, feature_dim",
    [((4, 3), -1), ((4, 3, 5), 1), ((4, 5, 3), -1), ((2, 3, 4, 5), 1)],
    ids=["dense_NF", "channels_first_NCL", "channels_last_NLC", "channels_first_NCHW"],
)
def test_parameters_broadcast_along_the_feature_dim(shape, feature_dim):
    act = SineActivation(3, SineConfig(decay_mode="none"), feature_dim=feature_dim)
    _distinct_amplitudes(act, [1.0, 2.0, 3.0])
    z = torch.randn(shape)
    out = act(z)
    assert out.shape == z.shape
    dim = feature_dim % z.dim()
    for channel, amplitude in enumerate([1.0, 2.0, 3.0]):
        zc, oc = z.select(dim, channel), out.select(dim, channel)
        torch.testing.assert_close(oc, amplitude * torch.sin((1.0 + 1e-6) * zc), atol=1e-5, rtol=1e-5)


def test_feature_size_mismatch_names_the_dim_and_shape():
    act = SineActivation(3, feature_dim=1)
    with pytest.raises(ValueError, match=r"expected 3 features on dim 1; got input of shape \(4, 5, 3\)"):
        act(torch.randn(4, 5, 3))


def test_siren_first_layer_draws_within_one_over_fan_in():
    torch.manual_seed(0)
    layer = nn.Linear(5, 400)
    siren_init_(layer, w0=30.0, is_first=True)
    bound = 1.0 / 5
    assert layer.weight.abs().max() <= bound
    assert layer.weight.abs().max() > 0.95 * bound  # the whole range is used, not a narrower one
    assert layer.bias.abs().max() <= bound


def test_siren_hidden_layer_draws_within_sqrt6_over_fan_in_divided_by_w0():
    torch.manual_seed(0)
    layer = nn.Linear(64, 64)
    siren_init_(layer, w0=30.0, is_first=False)
    bound = math.sqrt(6.0 / 64) / 30.0
    assert layer.weight.abs().max() <= bound
    assert layer.weight.abs().max() > 0.95 * bound


def test_siren_init_refuses_non_positive_w0():
    with pytest.raises(ValueError, match="w0 > 0"):
        siren_init_(nn.Linear(2, 2), w0=0.0, is_first=True)


def test_sine_layer_scales_the_pre_activation_by_w0():
    torch.manual_seed(0)
    layer = SineLayer(4, 6, w0=30.0, is_first=True)
    x = torch.randn(8, 4)
    torch.testing.assert_close(layer(x), layer.activation(30.0 * layer.linear(x)))
    layer.w0 = 1.0
    torch.testing.assert_close(layer(x), layer.activation(layer.linear(x)))
