"""The one validation error type and the one "did you mean" helper (psann.errors)."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from psann.errors import ValidationError, ValidationTypeError, did_you_mean, short_repr, unknown_key
from psann.runconfig import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_message_is_key_colon_reason_and_both_are_attributes():
    error = ValidationError("hisso.window", "expected an int >= 2, got 1")
    assert isinstance(error, ValueError)
    assert str(error) == "hisso.window: expected an int >= 2, got 1"
    assert (error.key, error.reason) == ("hisso.window", "expected an int >= 2, got 1")


def test_an_empty_key_leaves_the_reason_alone():
    assert str(ValidationError("", "no key here")) == "no key here"


def test_expected_is_the_house_template_with_a_short_value():
    error = ValidationError.expected("training.verbose", "an int >= 0", "loud")
    assert str(error) == "training.verbose: expected an int >= 0, got 'loud'"
    long_value = ValidationError.expected("data.loader", "an import path", "x" * 1000)
    assert len(long_value.reason) < 120 and long_value.reason.endswith("...")


def test_short_repr_keeps_short_values_and_cuts_long_ones_to_the_limit():
    assert short_repr([1, 2]) == "[1, 2]"
    cut = short_repr("y" * 200, limit=20)
    assert len(cut) == 20 and cut.endswith("...")


@pytest.mark.parametrize("cls", [ValidationError, ValidationTypeError, ConfigError])
def test_every_error_type_pickles_with_its_key_and_reason(cls):
    # Ray ships exceptions between processes; a subclass must come back as itself.
    error = cls("stages[1].epochs", "expected an int >= 1, got 0")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.key, back.reason, str(back)) == (error.key, error.reason, str(error))


@pytest.mark.parametrize(
    "key, prefix, moved",
    [
        ("window", "hisso", "hisso.window"),
        ("hidden_units", "estimator.params", "estimator.params.hidden_units"),
        ("[1].name", "stages", "stages[1].name"),
        ("", "estimator.params", "estimator.params"),
        ("lr", "", "lr"),
    ],
)
def test_under_moves_the_key_and_keeps_type_and_reason(key, prefix, moved):
    error = ConfigError(key, "bad")
    under = error.under(prefix)
    assert type(under) is ConfigError
    assert (under.key, under.reason, str(under)) == (moved, "bad", f"{moved}: bad" if moved else "bad")


def test_the_type_error_variant_is_both_a_validation_error_and_a_type_error():
    error = ValidationTypeError("data.kwargs", "expected a mapping, got [1]")
    assert isinstance(error, ValidationError) and isinstance(error, TypeError) and isinstance(error, ValueError)
    assert type(error.under("run")) is ValidationTypeError


def test_config_error_is_a_validation_error_with_the_same_constructor():
    error = ConfigError("a.b", "why")
    assert isinstance(error, ValidationError)
    assert (error.key, str(error)) == ("a.b", "a.b: why")


@pytest.mark.parametrize(
    "name, candidates, hint",
    [
        ("windw", ["window", "batch_episodes"], "window"),
        ("grace", ["type", "max_t", "grace_period", "reduction_factor"], "grace_period"),  # prefix hint
        ("trainig", ["estimator", "training"], "training"),
        ("zzz", ["window", "reward"], None),
        ("", ["window"], None),
        (3, ["a", "b"], None),
    ],
)
def test_did_you_mean_suggests_the_closest_name_or_a_name_it_starts(name, candidates, hint):
    assert did_you_mean(name, candidates) == hint


def test_unknown_key_names_the_path_suggests_and_lists_the_allowed_keys():
    error = unknown_key("windw", ["window", "reward"], "hisso")
    assert type(error) is ValidationError
    assert error.key == "hisso.windw"
    assert error.reason == "unknown key (did you mean 'window'?); allowed: window, reward"
    bare = unknown_key("qq", ("window",), error=ConfigError)
    assert type(bare) is ConfigError and str(bare) == "qq: unknown key; allowed: window"


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=15), candidates=st.lists(_names, max_size=8, unique=True))
def test_did_you_mean_only_ever_answers_with_a_candidate(name, candidates):
    hint = did_you_mean(name, candidates)
    assert hint is None or hint in candidates
    if name in candidates:
        assert hint == name


@settings(max_examples=200, deadline=None)
@given(candidates=st.lists(_names, min_size=1, max_size=8, unique=True), data=st.data())
def test_a_shortened_candidate_always_gets_a_hint(candidates, data):
    target = data.draw(st.sampled_from(candidates))
    prefix = target[: data.draw(st.integers(1, len(target)))]
    hint = did_you_mean(prefix, candidates)
    assert hint is not None and hint in candidates


@settings(max_examples=200, deadline=None)
@given(key=_names, allowed=st.lists(_names, min_size=1, max_size=8, unique=True), prefix=st.sampled_from(["", "hisso", "stages[0]"]))
def test_unknown_key_key_is_prefix_dot_key_and_its_message_follows_the_template(key, allowed, prefix):
    assume(key not in allowed)
    error = unknown_key(key, allowed, prefix)
    assert error.key == (f"{prefix}.{key}" if prefix else key)
    assert str(error) == f"{error.key}: {error.reason}"
    assert error.reason.startswith("unknown key") and error.reason.endswith(f"allowed: {', '.join(allowed)}")
    hint = did_you_mean(key, allowed)
    assert (f"(did you mean {hint!r}?)" in error.reason) == (hint is not None)


def test_the_module_imports_nothing_but_the_standard_library():
    # Load the file alone (not through the psann package, whose __init__ may load more): sweeps'
    # light modules and the results store use it without torch.
    code = (
        "import importlib.util, sys; "
        "spec = importlib.util.spec_from_file_location('errors_alone', 'psann/errors.py'); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
        "print(sorted(m for m in ('torch', 'numpy', 'ray', 'yaml', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
