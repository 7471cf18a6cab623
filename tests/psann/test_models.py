"""PSANN model families: shapes, shape errors, DropPath, WaveResNet identities and growth."""

import pytest
import torch

from psann.models import DropPath, PSANNNet, ResPSANNNet, WaveResNet


@pytest.mark.parametrize(
    "model",
    [
        PSANNNet(3, 2, hidden_layers=2, hidden_units=8),
        ResPSANNNet(3, 2, hidden_layers=2, hidden_units=8, drop_path=0.2),
        WaveResNet(3, 2, hidden_units=8, depth=2),
    ],
    ids=["dense", "residual", "wave_resnet"],
)
def test_models_map_n_by_dim_in_to_n_by_dim_out(model):
    assert model(torch.randn(5, 3)).shape == (5, 2)
    assert model(torch.randn(1, 3)).shape == (1, 2)


def test_wave_resnet_with_context_maps_to_n_by_dim_out():
    model = WaveResNet(3, 2, hidden_units=8, depth=2, context_dim=4)
    assert model(torch.randn(5, 3), torch.randn(5, 4)).shape == (5, 2)


@pytest.mark.parametrize("cls", [PSANNNet, ResPSANNNet, WaveResNet])
def test_wrong_feature_count_names_dim_1_and_the_shape(cls):
    model = cls(3, 1, hidden_units=8)
    with pytest.raises(ValueError, match=rf"{cls.__name__} expects input of shape \(N, 3\); got dim 1 = 5 \(shape \(4, 5\)\)"):
        model(torch.randn(4, 5))


@pytest.mark.parametrize("cls", [PSANNNet, ResPSANNNet, WaveResNet])
def test_wrong_rank_names_the_rank_and_the_shape(cls):
    model = cls(3, 1, hidden_units=8)
    with pytest.raises(ValueError, match=r"got rank 3 shape \(4, 2, 3\)"):
        model(torch.randn(4, 2, 3))


def test_wave_resnet_context_shape_mismatch_names_both_shapes():
    model = WaveResNet(3, 1, hidden_units=8, depth=1, context_dim=4)
    with pytest.raises(ValueError, match=r"expects context of shape \(5, 4\); got \(5, 2\)"):
        model(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"got None"):
        model(torch.randn(5, 3))


@pytest.mark.parametrize("kwargs, match", [({"hidden_layers": 0}, "hidden_layers >= 1")])
def test_dense_refuses_zero_layers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PSANNNet(2, 1, **kwargs)


def test_drop_path_is_identity_in_eval_and_random_in_train():
    drop = DropPath(0.5)
    x = torch.ones(64, 4)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(0)
    out = drop(x)
    rows = set(out[:, 0].tolist())
    assert rows == {0.0, 2.0}  # whole samples dropped, survivors rescaled by 1 / keep
    with pytest.raises(ValueError, match=r"drop_prob must be in \[0, 1\)"):
        DropPath(1.0)


def test_residual_net_is_deterministic_in_eval_and_stochastic_in_train():
    torch.manual_seed(0)
    model = ResPSANNNet(3, 1, hidden_layers=3, hidden_units=16, drop_path=0.5)
    x = torch.randn(32, 3)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    first = model(x)
    second = model(x)
    assert not torch.equal(first, second)


def test_wave_resnet_residual_alphas_start_at_zero():
    model = WaveResNet(2, 1, hidden_units=8, depth=3)
    assert [block.alpha.item() for block in model.blocks] == [0.0, 0.0, 0.0]
    x = torch.randn(6, 2)
    # With alpha = 0 every block is the identity: the net is head(stem(x)).
    torch.testing.assert_close(model(x), model.head(model.stem(x)))


def test_wave_resnet_film_and_phase_start_as_identity():
    torch.manual_seed(0)
    model = WaveResNet(2, 1, hidden_units=8, depth=2, context_dim=3)
    for block in model.blocks:
        block.alpha.data.fill_(1.0)  # make the blocks count, so the context could matter
        assert torch.equal(block.phase, torch.zeros(8))
    x = torch.randn(6, 2)
    out_a = model(x, torch.randn(6, 3))
    out_b = model(x, torch.zeros(6, 3))
    torch.testing.assert_close(out_a, out_b)
    ctx = torch.randn(6, 3)
    block = model.blocks[0]
    torch.testing.assert_close(block.film_scale(ctx), torch.zeros(6, 8))
    torch.testing.assert_close(block.film_shift(ctx), torch.zeros(6, 8))


def test_add_blocks_keeps_outputs_and_returns_the_new_parameters():
    torch.manual_seed(0)
    model = WaveResNet(2, 1, hidden_units=8, depth=1)
    model.blocks[0].alpha.data.fill_(0.5)  # a trained-looking block
    x = torch.randn(10, 2)
    before = model(x)
    new_params = model.add_blocks(2)
    assert model.depth == 3
    assert len(new_params) == 2 * len(list(model.blocks[0].parameters()))
    torch.testing.assert_close(model(x), before)
    with pytest.raises(ValueError, match="n >= 0"):
        model.add_blocks(-1)


def test_first_layer_w0_round_trips_outside_the_state_dict():
    torch.manual_seed(0)
    model = WaveResNet(2, 1, hidden_units=8, depth=1, first_layer_w0=30.0)
    keys = set(model.state_dict())
    model.set_first_layer_w0(7.5)
    assert set(model.state_dict()) == keys  # w0 is a non-persistent buffer: no new key
    restored = WaveResNet(2, 1, hidden_units=8, depth=1, first_layer_w0=30.0)
    restored.load_state_dict(model.state_dict())
    assert restored.first_layer_w0 == 30.0  # the weights do not carry w0 ...
    restored.set_first_layer_w0(model.first_layer_w0)  # ... checkpoint metadata does
    x = torch.randn(5, 2)
    torch.testing.assert_close(restored(x), model(x))


def test_sine_conv_keeps_w0_in_a_buffer_outside_the_state_dict():
    from psann.models.res_conv import SineConv

    torch.manual_seed(0)
    conv = SineConv(2, 4, spatial_dims=1, w0=30.0, is_first=True)
    assert set(conv.state_dict()) == {
        "conv.weight", "conv.bias", "activation._amplitude", "activation._frequency", "activation._decay",
    }
    x = torch.randn(3, 2, 7)
    conv.w0 = 10.0
    assert conv.w0 == 10.0
    torch.testing.assert_close(conv(x), conv.activation(10.0 * conv.conv(x)), rtol=1e-5, atol=1e-5)


def test_first_layer_w0_setter_changes_the_stem_only():
    model = WaveResNet(2, 1, hidden_units=8, depth=1, first_layer_w0=30.0)
    model.set_first_layer_w0(5.0)
    assert model.first_layer_w0 == 5.0
    assert model.blocks[0].out.w0 == 1.0
    with pytest.raises(ValueError, match="first_layer_w0 must be > 0"):
        model.set_first_layer_w0(0.0)
