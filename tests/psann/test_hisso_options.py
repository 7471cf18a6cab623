"""HISSOOptions: validation once at the boundary, errors that name the field and what is allowed."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann.errors import ValidationError, ValidationTypeError
from psann.hisso import HISSOOptions, WarmStartOptions


def _error(build, *args, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        build(*args, **kwargs)
    return info.value


def test_defaults_follow_the_design():
    opts = HISSOOptions()
    assert (opts.window, opts.batch_episodes, opts.primary_transform, opts.transition_penalty) == (48, 32, "softmax", 0.0)
    assert opts.reward is None and opts.supervised is None and opts.mixed_precision is False


@settings(max_examples=30, deadline=None)
@given(st.integers(max_value=1))
def test_window_below_two_is_refused_naming_the_field(window):
    error = _error(HISSOOptions, window=window)
    assert error.key == "hisso.window"
    assert str(error) == f"hisso.window: expected an int >= 2, got {window}"


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=10_000))
def test_any_window_of_two_or_more_is_accepted(window):
    assert HISSOOptions(window=window).window == window


def test_unknown_transform_lists_the_allowed_values():
    error = _error(HISSOOptions, primary_transform="sigmoid")
    assert error.key == "hisso.primary_transform"
    assert error.reason == "expected one of softmax, tanh, identity, got 'sigmoid'"


@pytest.mark.parametrize("field", ["transition_penalty", "input_noise"])
def test_negative_penalty_and_noise_are_refused(field):
    error = _error(HISSOOptions, **{field: -0.5})
    assert error.key == f"hisso.{field}"
    assert error.reason == "expected a finite number >= 0.0, got -0.5"


@pytest.mark.parametrize(
    "changes, key, match",
    [
        ({"amp_dtype": "float8"}, "hisso.amp_dtype", r"expected one of float16, bfloat16, got 'float8'"),
        ({"state_reset": "step"}, "hisso.state_reset", r"expected one of batch, epoch, none, got 'step'"),
        ({"batch_episodes": 0}, "hisso.batch_episodes", r"expected an int >= 1, got 0"),
        ({"updates_per_epoch": 1.5}, "hisso.updates_per_epoch", r"expected an int >= 1, got 1.5"),
        ({"val_episodes": 0}, "hisso.val_episodes", r"expected an int >= 1"),
        ({"eval_seed": -1}, "hisso.eval_seed", r"expected an int >= 0"),
        ({"grad_clip": "big"}, "hisso.grad_clip", r"expected a finite number >= 0.0, got 'big'"),
        ({"mixed_precision": "yes"}, "hisso.mixed_precision", r"expected true or false"),
        ({"reward": 3}, "hisso.reward", r"expected a reward name, an import path, a {target, kwargs} mapping or a callable"),
        ({"transition_penalty": float("nan")}, "hisso.transition_penalty", r"expected a finite number"),
        ({"supervised": "yes"}, "hisso.supervised", r"expected a mapping of warm-start options"),
    ],
)
def test_other_fields_are_validated(changes, key, match):
    error = _error(HISSOOptions, **changes)
    assert error.key == key
    assert str(error).startswith(f"{key}: ")
    assert match in error.reason


def test_a_long_bad_value_is_cut_short_in_the_message():
    error = _error(HISSOOptions, primary_transform="x" * 500)
    assert error.key == "hisso.primary_transform"
    assert len(str(error)) < 200 and str(error).endswith("...")


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"epochs": 0}, "hisso.supervised.epochs"),
        ({"batch_size": True}, "hisso.supervised.batch_size"),
        ({"lr": 0.0}, "hisso.supervised.lr"),
        ({"lr": -1.0}, "hisso.supervised.lr"),
        ({"y_key": 3}, "hisso.supervised.y_key"),
    ],
)
def test_warm_start_fields_are_validated_with_their_run_config_path(changes, key):
    assert _error(WarmStartOptions, **changes).key == key


def test_unknown_key_suggests_the_closest_field():
    error = _error(HISSOOptions.from_mapping, {"windw": 16})
    assert error.key == "hisso.windw"
    assert str(error).startswith("hisso.windw: unknown key (did you mean 'window'?); allowed: window, ")


def test_a_shortened_key_gets_the_field_it_starts():
    # "upd" is too short for difflib's ratio; the shared helper falls back to a prefix match.
    error = _error(HISSOOptions.from_mapping, {"upd": 4})
    assert error.key == "hisso.upd"
    assert "did you mean 'updates_per_epoch'" in error.reason


def test_a_section_that_is_not_a_mapping_is_a_type_error_keyed_hisso():
    with pytest.raises(ValidationTypeError) as info:
        HISSOOptions.from_mapping([("window", 8)])
    assert isinstance(info.value, TypeError) and info.value.key == "hisso"


def test_trans_cost_is_an_alias_of_transition_penalty():
    assert HISSOOptions.from_mapping({"trans_cost": 0.01}).transition_penalty == 0.01
    assert HISSOOptions.from_mapping({"trans_cost": 0.01, "transition_penalty": 0.01}).transition_penalty == 0.01


def test_conflicting_alias_is_refused_naming_both_fields():
    error = _error(HISSOOptions.from_mapping, {"trans_cost": 0.01, "transition_penalty": 0.02})
    assert error.key == "hisso.trans_cost"
    assert error.reason.startswith("conflicts with hisso.transition_penalty (0.01 vs 0.02)")


def test_supervised_mapping_becomes_warm_start_options_and_is_validated():
    opts = HISSOOptions.from_mapping({"supervised": {"epochs": 2, "batch_size": 16}, "enabled": True})
    assert opts.supervised == WarmStartOptions(epochs=2, batch_size=16)
    error = _error(HISSOOptions.from_mapping, {"supervised": {"epoch": 2}})
    assert error.key == "hisso.supervised.epoch"
    assert "did you mean 'epochs'" in error.reason
    error = _error(HISSOOptions.from_mapping, {"supervised": {"epochs": 0}})
    assert (error.key, error.reason) == ("hisso.supervised.epochs", "expected an int >= 1, got 0")
    assert HISSOOptions.from_mapping({"supervised": False}).supervised is None


def test_coerce_accepts_options_dicts_and_none_but_not_other_types():
    opts = HISSOOptions(window=8)
    assert HISSOOptions.coerce(opts) is opts
    assert HISSOOptions.coerce({"window": 8}) == opts
    assert HISSOOptions.coerce(None) == HISSOOptions()
    with pytest.raises(TypeError, match="hisso_options: expected a HISSOOptions or a dict, got list") as info:
        HISSOOptions.coerce([8])
    assert isinstance(info.value, ValidationError) and info.value.key == "hisso_options"


def test_options_are_frozen():
    with pytest.raises(Exception):
        HISSOOptions().window = 3
