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


# -- the hand-written kernel against today's formula -------------------------------------------------
#
# ``_todays_formula`` is the activation as it was before the custom autograd Function, in plain
# autograd ops: the reference the kernel must reproduce (values and gradients).


def _todays_formula(act: SineActivation, z: torch.Tensor, w0: torch.Tensor | None = None) -> torch.Tensor:
    if w0 is not None:
        z = w0 * z
    shape = [1] * z.dim()
    shape[act.feature_dim % z.dim()] = act.features
    amplitude = act.amplitude.view(shape)
    sine = torch.sin(act.frequency.view(shape) * z)
    if act.config.decay_mode == "none":
        return amplitude * sine
    envelope = z.abs() if act.config.decay_mode == "abs" else torch.relu(z)
    log_amplitude = torch.log(amplitude.clamp_min(1e-30))
    return sine * torch.exp(torch.addcmul(log_amplitude, envelope, act.decay.view(shape), value=-1.0))


MODES = ["abs", "relu", "none"]
LEARNABLE = {"all": "all", "none": "none", "frequency_decay": ("frequency", "decay")}
# Each bound clamps one of the three neurons' values below and leaves the others inside, with room
# on both sides for finite differences.
BOUNDS = {"unbounded": None, "bounded": {"amplitude": (None, 1.2), "frequency": (0.5, None), "decay": (0.05, 0.3)}}
LAYOUTS = {"dense_NF": ((4, 3), -1), "channels_first_NCL": ((2, 3, 5), 1)}
RAW_VALUES = {"amplitude": [0.5, 1.5, 2.0], "frequency": [0.3, 1.0, 2.0], "decay": [0.01, 0.2, 0.5]}


def _activation(mode, learnable, bounds, feature_dim, dtype=torch.float64) -> SineActivation:
    act = SineActivation(3, SineConfig(decay_mode=mode, learnable=learnable, bounds=bounds), feature_dim=feature_dim)
    act = act.to(dtype)
    with torch.no_grad():
        for name, values in RAW_VALUES.items():
            getattr(act, f"_{name}").copy_(torch.tensor([inverse_softplus(v) for v in values]))
    return act


def _away_from_zero(shape, dtype=torch.float64) -> torch.Tensor:
    # |z| and relu(z) have no derivative at 0; finite differences need a margin around it.
    z = torch.rand(shape, dtype=dtype) * 1.8 + 0.2
    return z * torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(dtype)


def _params(act: SineActivation) -> dict[str, torch.Tensor]:
    return {f"_{name}": getattr(act, f"_{name}") for name in ("amplitude", "frequency", "decay")}


@pytest.mark.parametrize("w0", [None, 2.5], ids=["no_w0", "w0"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bounds", list(BOUNDS))
@pytest.mark.parametrize("learnable", list(LEARNABLE))
@pytest.mark.parametrize("mode", MODES)
def test_kernel_gradients_pass_gradcheck_in_float64(mode, learnable, bounds, layout, w0):
    torch.manual_seed(0)
    shape, feature_dim = LAYOUTS[layout]
    act = _activation(mode, LEARNABLE[learnable], BOUNDS[bounds], feature_dim)
    scale = None if w0 is None else torch.tensor(w0, dtype=torch.float64)
    names = list(_params(act))
    params = [value.detach().clone().requires_grad_(value.requires_grad) for value in _params(act).values()]

    def apply(z, *raw):
        return torch.func.functional_call(act, dict(zip(names, raw)), (z, scale))

    z = _away_from_zero(shape).requires_grad_(True)
    assert torch.autograd.gradcheck(apply, (z, *params))


@pytest.mark.parametrize("w0", [None, 30.0], ids=["no_w0", "w0_30"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bounds", list(BOUNDS))
@pytest.mark.parametrize("learnable", list(LEARNABLE))
@pytest.mark.parametrize("mode", MODES)
def test_kernel_matches_todays_formula_in_float32(mode, learnable, bounds, layout, w0):
    torch.manual_seed(0)
    shape, feature_dim = LAYOUTS[layout]
    act = _activation(mode, LEARNABLE[learnable], BOUNDS[bounds], feature_dim, dtype=torch.float32)
    scale = None if w0 is None else torch.tensor(w0)
    z = torch.randn((16,) + shape[1:])
    z.view(-1)[:4] = 0.0  # the kernel's |z| and relu derivatives are 0 at 0, as autograd's are
    z.requires_grad_(True)
    inputs = [z] + [p for p in act.parameters()]
    out, expected = act(z, scale), _todays_formula(act, z, scale)
    # With w0 = 30 the sine's argument reaches about 100, where float32 spacing is 8e-6: the kernel
    # folds w0 into f (sin((f w0) z) for sin(f (w0 z))), which rounds differently by about that.
    tolerance = dict(rtol=1e-5, atol=1e-6) if w0 is None else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, expected, **tolerance)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, grad_out, allow_unused=True)
    want = torch.autograd.grad(expected, inputs, grad_out, allow_unused=True)
    for name, g, w in zip(["z"] + [n for n, _ in act.named_parameters()], got, want):
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, **tolerance, msg=lambda m, name=name: f"{name}: {m}")


def test_decay_of_mode_none_gets_no_gradient_as_before():
    act = SineActivation(3, SineConfig(decay_mode="none"))
    act(torch.randn(4, 3)).sum().backward()
    assert act._decay.grad is None
    assert act._amplitude.grad is not None and act._frequency.grad is not None


def test_frozen_parameters_leave_the_input_gradient_exact():
    act = _activation("abs", "none", None, -1, dtype=torch.float32)
    z = torch.randn(8, 3, requires_grad=True)
    act(z).sum().backward()
    expected = torch.autograd.grad(_todays_formula(act, z).sum(), z)[0]
    torch.testing.assert_close(z.grad, expected)


def test_double_backward_matches_todays_formula():
    # A loss on dy/dz (physics-informed training of sine networks) needs the gradient's gradient.
    torch.manual_seed(0)
    act = _activation("abs", "all", None, -1, dtype=torch.float64)
    z = _away_from_zero((6, 3)).requires_grad_(True)
    results = []
    for formula in (act, lambda x: _todays_formula(act, x)):
        (dy_dz,) = torch.autograd.grad(formula(z).sum(), z, create_graph=True)
        results.append(torch.autograd.grad(dy_dz.pow(2).sum(), [z, *act.parameters()]))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_bfloat16_autocast_runs_in_float32_and_returns_input_gradients_in_bfloat16():
    torch.manual_seed(0)
    layer = SineLayer(5, 4, w0=30.0, is_first=True)
    x = torch.randn(8, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer.linear(x)
        assert z.dtype == torch.bfloat16
        z.retain_grad()
        out = layer.activation(z, layer._w0)
    assert out.dtype == torch.float32  # as the plain formula: float32 parameters promote
    out.sum().backward()
    assert z.grad.dtype == torch.bfloat16
    # Today's formula scaled z by w0 in bfloat16 before the float32 parameters promoted it; the
    # kernel folds w0 into f in float32, so compare against the formula on the same float32 z.
    z_ref = z.detach().float().requires_grad_(True)
    expected = _todays_formula(layer.activation, z_ref, torch.tensor(30.0))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    expected.sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad.bfloat16(), rtol=1e-2, atol=1e-2)


# -- w0 in a buffer --------------------------------------------------------------------------------


SINE_LAYER_KEYS = {
    "linear.weight", "linear.bias", "activation._amplitude", "activation._frequency", "activation._decay",
}


def test_w0_is_a_non_persistent_buffer_so_state_dict_keys_are_unchanged():
    layer = SineLayer(4, 6, w0=30.0, is_first=True)
    assert set(layer.state_dict()) == SINE_LAYER_KEYS
    assert dict(layer.named_buffers())["_w0"].item() == 30.0
    assert isinstance(layer.w0, float) and layer.w0 == 30.0


def test_setting_w0_changes_the_output_in_place_without_touching_parameters():
    torch.manual_seed(0)
    layer = SineLayer(4, 6, w0=30.0, is_first=True)
    x = torch.randn(8, 4)
    before = {name: p.detach().clone() for name, p in layer.named_parameters()}
    buffer = layer._w0
    layer.w0 = 12.5
    assert layer._w0 is buffer and layer.w0 == 12.5  # the same tensor, filled in place
    for name, p in layer.named_parameters():
        torch.testing.assert_close(p, before[name])
    expected = _todays_formula(layer.activation, layer.linear(x), torch.tensor(12.5))
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_hidden_layer_at_w0_one_skips_the_scale_until_w0_changes():
    torch.manual_seed(0)
    layer = SineLayer(4, 6)
    x = torch.randn(8, 4)
    torch.testing.assert_close(layer(x), layer.activation(layer.linear(x)))
    layer.w0 = 2.0
    torch.testing.assert_close(layer(x), _todays_formula(layer.activation, 2.0 * layer.linear(x)))
    layer.w0 = 1.0
    torch.testing.assert_close(layer(x), layer.activation(layer.linear(x)))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_w0_setter_refuses_non_positive_or_non_finite_values(bad):
    layer = SineLayer(2, 2, w0=3.0)
    with pytest.raises(ValueError, match="w0 must be a finite number > 0"):
        layer.w0 = bad
    assert layer.w0 == 3.0


def test_w0_follows_the_module_to_another_dtype():
    layer = SineLayer(2, 3, w0=30.0, is_first=True).double()
    assert layer._w0.dtype == torch.float64
    x = torch.randn(5, 2, dtype=torch.float64)
    assert layer(x).dtype == torch.float64


def test_changing_w0_under_torch_compile_does_not_recompile():
    torch.manual_seed(0)
    layer = SineLayer(4, 6, w0=30.0, is_first=True)
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(layer, backend=counting_backend)
    x = torch.randn(8, 4)
    for w0 in (1.0, 7.0, 19.0, 30.0):
        layer.w0 = w0
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1


def test_compiled_layer_matches_the_eager_kernel_in_values_and_gradients():
    # Under torch.compile the activation traces the plain formula; it must agree with the kernel.
    torch.manual_seed(0)
    layer = SineLayer(4, 6, w0=30.0, is_first=True, sine=SineConfig(decay_mode="relu"))
    compiled = torch.compile(layer, backend="eager")
    x = torch.randn(8, 4)
    eager_out, compiled_out = layer(x), compiled(x)
    torch.testing.assert_close(compiled_out, eager_out, rtol=1e-5, atol=1e-5)
    params = list(layer.parameters())
    for g, e in zip(torch.autograd.grad(compiled_out.sum(), params), torch.autograd.grad(eager_out.sum(), params)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
