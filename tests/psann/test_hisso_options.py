"""HISSOOptions: validation once at the boundary, errors that name the field and what is allowed."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psann.hisso import HISSOOptions, WarmStartOptions


def test_defaults_follow_the_design():
    opts = HISSOOptions()
    assert (opts.window, opts.batch_episodes, opts.primary_transform, opts.transition_penalty) == (48, 32, "softmax", 0.0)
    assert opts.reward is None and opts.supervised is None and opts.mixed_precision is False


@settings(max_examples=30, deadline=None)
@given(st.integers(max_value=1))
def test_window_below_two_is_refused_naming_the_field(window):
    with pytest.raises(ValueError, match=rf"hisso.window: expected int >= 2, got {window}"):
        HISSOOptions(window=window)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=2, max_value=10_000))
def test_any_window_of_two_or_more_is_accepted(window):
    assert HISSOOptions(window=window).window == window


def test_unknown_transform_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"hisso.primary_transform: expected one of softmax, tanh, identity, got 'sigmoid'"):
        HISSOOptions(primary_transform="sigmoid")


@pytest.mark.parametrize("field", ["transition_penalty", "input_noise"])
def test_negative_penalty_and_noise_are_refused(field):
    with pytest.raises(ValueError, match=rf"hisso.{field}: expected a finite number >= 0.0, got -0.5"):
        HISSOOptions(**{field: -0.5})


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"amp_dtype": "float8"}, r"hisso.amp_dtype: expected one of float16, bfloat16, got 'float8'"),
        ({"state_reset": "step"}, r"hisso.state_reset: expected one of batch, epoch, none, got 'step'"),
        ({"batch_episodes": 0}, r"hisso.batch_episodes: expected int >= 1, got 0"),
        ({"mixed_precision": "yes"}, r"hisso.mixed_precision: expected true or false"),
        ({"reward": 3}, r"hisso.reward: expected a reward name, an import path or a callable"),
        ({"transition_penalty": float("nan")}, r"hisso.transition_penalty: expected a finite number"),
    ],
)
def test_other_fields_are_validated(changes, match):
    with pytest.raises(ValueError, match=match):
        HISSOOptions(**changes)


def test_unknown_key_suggests_the_closest_field():
    with pytest.raises(ValueError, match=r"hisso.windw: unknown key \(did you mean 'window'\?\); allowed: window, "):
        HISSOOptions.from_mapping({"windw": 16})


def test_trans_cost_is_an_alias_of_transition_penalty():
    assert HISSOOptions.from_mapping({"trans_cost": 0.01}).transition_penalty == 0.01
    assert HISSOOptions.from_mapping({"trans_cost": 0.01, "transition_penalty": 0.01}).transition_penalty == 0.01


def test_conflicting_alias_is_refused_naming_both_fields():
    with pytest.raises(ValueError, match=r"hisso.trans_cost: conflicts with hisso.transition_penalty \(0.01 vs 0.02\)"):
        HISSOOptions.from_mapping({"trans_cost": 0.01, "transition_penalty": 0.02})


def test_supervised_mapping_becomes_warm_start_options_and_is_validated():
    opts = HISSOOptions.from_mapping({"supervised": {"epochs": 2, "batch_size": 16}, "enabled": True})
    assert opts.supervised == WarmStartOptions(epochs=2, batch_size=16)
    with pytest.raises(ValueError, match=r"hisso.supervised.epoch: unknown key \(did you mean 'epochs'\?\)"):
        HISSOOptions.from_mapping({"supervised": {"epoch": 2}})
    with pytest.raises(ValueError, match=r"hisso.supervised.epochs: expected int >= 1, got 0"):
        HISSOOptions.from_mapping({"supervised": {"epochs": 0}})
    assert HISSOOptions.from_mapping({"supervised": False}).supervised is None


def test_coerce_accepts_options_dicts_and_none_but_not_other_types():
    opts = HISSOOptions(window=8)
    assert HISSOOptions.coerce(opts) is opts
    assert HISSOOptions.coerce({"window": 8}) == opts
    assert HISSOOptions.coerce(None) == HISSOOptions()
    with pytest.raises(TypeError, match="hisso_options must be a HISSOOptions or a dict, got list"):
        HISSOOptions.coerce([8])


def test_options_are_frozen():
    with pytest.raises(Exception):
        HISSOOptions().window = 3
