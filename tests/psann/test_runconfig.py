"""Run-config schema: every error names its key path; defaults are filled in."""

import copy
import math
import pickle

import numpy as np
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import psann.runconfig
from _config_edits import edited
from psann import PSANNRegressor
from psann.errors import ValidationError, short_repr
from psann.hisso.options import HISSOOptions, WarmStartOptions
from psann.runconfig import (
    SECTIONS,
    ConfigError,
    _SECTION_KEYS,
    apply_overrides,
    load_config_file,
    parse_run_config,
)

BASE = {
    "estimator": {"target": "psann.PSANNRegressor", "params": {"hidden_units": 8, "epochs": 2, "device": "cpu"}},
    "hisso": {"window": 16, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio",
              "supervised": {"y_key": "y_train", "epochs": 1}},
    "data": {"loader": "psann.data.toy_hisso_dataset", "kwargs": {"steps": 120}},
    "training": {"verbose": 0},
    "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.001},
}


def _config(**changes):
    """BASE with dotted-path changes; a value of ... deletes the key."""
    return edited(BASE, changes)


def _error(raw, tmp_path=None):
    with pytest.raises(ConfigError) as info:
        parse_run_config(raw, base_dir=tmp_path or ".")
    error = info.value
    assert "\n" not in str(error)
    assert str(error) == f"{error.key}: {error.reason}"  # the one template; the key is data
    return error


class NewAPIRegressor(PSANNRegressor):
    """A user estimator (imported by path) whose own parameter check raises a keyed error."""

    def __init__(self, *, hidden_units=8, epochs=2, device="cpu", depth_hint=None):
        super().__init__(hidden_units=hidden_units, epochs=epochs, device=device)
        self.depth_hint = depth_hint

    def validate_params(self):
        if self.depth_hint is not None and self.depth_hint not in ("shallow", "deep"):
            raise ValidationError.expected("depth_hint", "shallow or deep", self.depth_hint)

    def canonical_params(self):
        return self.get_params(deep=False)


class KeylessRegressor(PSANNRegressor):
    """A user estimator whose check raises a plain ValueError: no key is guessed from its text."""

    def __init__(self, *, hidden_units=8, epochs=2, device="cpu"):
        super().__init__(hidden_units=hidden_units, epochs=epochs, device=device)

    def validate_params(self):
        raise ValueError("The 'epochs' parameter is not liked")


def test_base_config_parses_and_resolved_config_fills_defaults():
    config = parse_run_config(BASE)
    resolved = config.resolved
    assert config.estimator_cls.__name__ == "PSANNRegressor"
    assert resolved["estimator"]["params"]["lr"] == 0.001  # estimator default filled in
    assert resolved["hisso"]["grad_clip"] == 1.0
    assert resolved["hisso"]["supervised"] == {"y_key": "y_train", "epochs": 1, "batch_size": 128, "lr": None}
    assert resolved["evaluation"] == {"portfolio_prices_key": "prices_test", "trans_cost": 0.001, "split": "test"}
    assert resolved["training"] == {"verbose": 0, "keep_checkpoints": False}
    # The resolved config is itself a valid config (what config_resolved.yaml feeds back in).
    again = parse_run_config(yaml.safe_load(yaml.safe_dump(resolved)))
    assert again.resolved == resolved


def test_hisso_reward_defaults_to_portfolio_and_is_recorded():
    config = parse_run_config(_config(**{"hisso.reward": ...}))
    assert config.hisso.reward == "portfolio"
    assert config.resolved["hisso"]["reward"] == "portfolio"


def test_trans_cost_defaults_to_the_transition_penalty():
    config = parse_run_config(_config(**{"evaluation.trans_cost": ..., "hisso.transition_penalty": 0.002}))
    assert config.trans_cost == 0.002


def test_hisso_enabled_false_gives_a_supervised_run():
    config = parse_run_config(_config(**{"hisso.enabled": False}))
    assert config.hisso is None
    assert config.resolved["hisso"]["enabled"] is False


def test_unknown_section_is_rejected_with_did_you_mean():
    error = _error(_config(trainig={"verbose": 1}))
    assert error.reason.startswith("unknown key")
    assert error.key == "trainig"
    assert "did you mean 'training'" in str(error)


@pytest.mark.parametrize(
    "dotted, value, key_path, suggestion",
    [
        ("estimator.parms", {}, "estimator.parms", "params"),
        ("estimator.params.hiden_units", 8, "estimator.params.hiden_units", "hidden_units"),
        ("hisso.windw", 16, "hisso.windw", "window"),
        ("hisso.supervised.y_kye", "y_train", "hisso.supervised.y_kye", "y_key"),
        ("data.kwarg", {}, "data.kwarg", "kwargs"),
        ("training.verbos", 1, "training.verbos", "verbose"),
        ("evaluation.trans_cots", 0.1, "evaluation.trans_cots", "trans_cost"),
    ],
)
def test_unknown_key_in_each_section_names_the_key_path_and_suggests(dotted, value, key_path, suggestion):
    error = _error(_config(**{dotted: value}))
    assert error.key == key_path
    assert error.reason.startswith("unknown key")
    assert f"did you mean {suggestion!r}" in error.reason


@pytest.mark.parametrize(
    "dotted, value, key_path, fragment",
    [
        ("hisso.window", "abc", "hisso.window", "expected an int >= 2, got 'abc'"),
        ("hisso.window", 1, "hisso.window", "expected an int >= 2, got 1"),
        ("hisso.window", True, "hisso.window", "expected an int >= 2"),
        ("hisso.batch_episodes", 2.5, "hisso.batch_episodes", "expected an int >= 1"),
        ("hisso.primary_transform", "relu", "hisso.primary_transform", "softmax"),
        ("hisso.enabled", "yes", "hisso.enabled", "true or false"),
        ("hisso.supervised.epochs", "x", "hisso.supervised.epochs", "expected an int >= 1"),
        ("hisso.supervised.y_key", "targets", "hisso.supervised.y_key", "y_train"),
        ("hisso.supervised.y", [1, 2], "hisso.supervised.y", "y_key"),
        ("hisso.supervised", "yes", "hisso.supervised", "mapping of warm-start options"),
        ("hisso.reward", "portfolo", "hisso.reward", "did you mean 'portfolio'"),
        ("hisso.reward", "no_such_module.reward_fn", "hisso.reward", "outside the trusted modules"),
        ("hisso", [1, 2], "hisso", "expected a mapping"),
        ("estimator.params.hidden_units", 0, "estimator.params.hidden_units", "got 0"),
        ("estimator.params.lr", "fast", "estimator.params.lr", "got 'fast'"),
        ("estimator.params.hidden_width", 4, "estimator.params.hidden_width", "hidden_units"),
        ("estimator.params", [1], "estimator.params", "expected a mapping"),
        ("training.verbose", "loud", "training.verbose", "int >= 0"),
        ("training.keep_checkpoints", "yes", "training.keep_checkpoints", "true or false"),
        ("evaluation.trans_cost", -1, "evaluation.trans_cost", "number >= 0"),
        ("evaluation.trans_cost", float("nan"), "evaluation.trans_cost", "number >= 0"),
        ("evaluation.trans_cost", float("inf"), "evaluation.trans_cost", "number >= 0"),
        ("evaluation.portfolio_prices_key", "prices_tst", "evaluation.portfolio_prices_key", "prices_test"),
        ("evaluation.split", "holdout", "evaluation.split", "train, val, test"),
        ("evaluation.split", "val", "evaluation.split", "does not match"),
        ("data.loader", "no_such_module.loader", "data.loader", "outside the trusted modules"),
        ("data.loader", "psann.data.DATASET_KEYS", "data.loader", "not a callable"),
        ("data.loader", "toy_hisso_dataset", "data.loader", "import path"),
        ("data.loader", 5, "data.loader", "import path"),
        ("data.npz", "x.npz", "data", "exactly one of"),
        ("data.kwargs", [1], "data.kwargs", "expected a mapping"),
    ],
)
def test_wrong_type_or_value_names_the_key_path(dotted, value, key_path, fragment):
    error = _error(_config(**{dotted: value}))
    assert type(error) is ConfigError and isinstance(error, ValidationError)
    assert error.key == key_path
    assert fragment.lower() in error.reason.lower()
    back = pickle.loads(pickle.dumps(error))  # Ray carries config errors between processes
    assert (type(back), back.key, back.reason) == (ConfigError, error.key, error.reason)


def test_every_error_of_a_set_of_bad_configs_is_a_validation_error_keyed_by_its_path(tmp_path):
    bad = {
        "estimator": _config(estimator=...),
        "estimator.params.epochs": _config(**{"estimator.params.epochs": 0}),
        "estimator.params.hiden_units": _config(**{"estimator.params.hiden_units": 3}),
        "hisso.window": _config(**{"hisso.window": 1}),
        "hisso.supervised.batch_size": _config(**{"hisso.supervised.batch_size": 0}),
        "hisso.trans_cost": _config(**{"hisso.trans_cost": 0.5, "hisso.transition_penalty": 0.1}),
        "hisso.reward": _config(**{"hisso.reward": "sharpe_ratio"}),
        "data": _config(**{"data": {}}),
        "data.npz": _config(**{"data": {"npz": "absent.npz"}}),
        "data.loader": _config(**{"data.loader": "psann.no_such_loader"}),
        "training.verbose": _config(**{"training.verbose": -1}),
        "evaluation.split": _config(**{"evaluation.split": "holdout"}),
        "stages": _config(stages=[]),
    }
    for key_path, raw in bad.items():
        with pytest.raises(ValidationError) as info:
            parse_run_config(raw, base_dir=tmp_path)
        assert info.value.key == key_path, (key_path, str(info.value))


def test_an_estimators_keyed_error_is_placed_under_estimator_params():
    target = f"{__name__}.NewAPIRegressor"
    config = parse_run_config(_config(**{"estimator.target": target, "estimator.params": {"depth_hint": "deep"}}))
    assert config.estimator_params["depth_hint"] == "deep"
    error = _error(_config(**{"estimator.target": target, "estimator.params": {"depth_hint": "wide"}}))
    assert (error.key, error.reason) == ("estimator.params.depth_hint", "expected shallow or deep, got 'wide'")
    assert isinstance(error.__cause__, ValidationError) and error.__cause__.key == "depth_hint"


def test_an_estimator_error_without_a_key_is_not_keyed_by_guessing_from_its_text():
    # The message names 'epochs', but only a ValidationError's .key says which parameter it is.
    error = _error(_config(**{"estimator.target": f"{__name__}.KeylessRegressor", "estimator.params": {"epochs": 3}}))
    assert error.key == "estimator.params"
    assert "'epochs' parameter is not liked" in error.reason


def test_deprecated_alias_is_accepted_and_resolved_to_its_canonical_name():
    with pytest.warns(DeprecationWarning, match="estimator.params: PSANNRegressor: 'hidden_width' is deprecated, use 'hidden_units'"):
        config = parse_run_config(_config(**{"estimator.params": {"hidden_width": 6, "epochs": 2, "device": "cpu"}}))
    assert config.estimator_params["hidden_units"] == 6
    assert "hidden_width" not in config.resolved["estimator"]["params"]


def test_a_reward_registry_error_is_keyed_by_hisso_reward_from_its_reason(monkeypatch):
    def refuse(name):
        raise ValidationError("reward", f"unknown reward {name!r}")

    monkeypatch.setattr(psann.runconfig, "resolve_reward", refuse)
    error = _error(_config(**{"hisso.reward": "sharpe"}))
    assert str(error) == "hisso.reward: unknown reward 'sharpe'"


@pytest.mark.parametrize(
    "dotted, key_path",
    [("estimator", "estimator"), ("estimator.target", "estimator.target"), ("data", "data")],
)
def test_missing_required_key_names_it(dotted, key_path):
    error = _error(_config(**{dotted: ...}))
    assert error.key == key_path
    assert "missing required" in str(error)


@pytest.mark.parametrize(
    "target",
    ["os.path.join", "builtins.dict", "psann.PSANNNet", "psann.training.Callback", "PSANNRegresor", "", 42, None],
)
def test_estimator_target_that_is_not_a_psann_estimator_is_rejected(target):
    error = _error(_config(**{"estimator.target": target}))
    assert error.key == "estimator.target"
    assert "psann.PSANNRegressor" in str(error)  # the message lists what is allowed


@pytest.mark.parametrize("target", ["PSANNRegressor", "psann.WaveResNetRegressor", "psann.estimators.ResPSANNRegressor"])
def test_estimator_target_accepts_class_names_and_import_paths(target):
    config = parse_run_config(_config(**{"estimator.target": target}))
    assert config.estimator_cls.__name__ == target.rsplit(".", 1)[-1]
    assert config.resolved["estimator"]["target"] == f"psann.{config.estimator_cls.__name__}"


def test_npz_path_is_relative_to_the_config_file_and_must_exist(tmp_path):
    raw = _config(**{"data": {"npz": "data/market.npz"}})
    error = _error(raw, tmp_path)
    assert error.key == "data.npz"
    assert str(tmp_path / "data" / "market.npz") in str(error)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "market.npz", X_train=np.ones((4, 2)))
    config = parse_run_config(raw, base_dir=tmp_path)
    assert config.data["npz"] == (tmp_path / "data" / "market.npz").resolve()


def test_load_config_file_reads_yaml_and_json_and_refuses_a_non_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "c.json").write_text(__import__("json").dumps(BASE))
    assert load_config_file(tmp_path / "c.yaml") == BASE
    assert load_config_file(tmp_path / "c.json") == BASE
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections") as info:
        load_config_file(tmp_path / "list.yaml")
    assert info.value.key == str(tmp_path / "list.yaml")  # a file-level problem is keyed by the file
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        load_config_file(tmp_path / "broken.json")
    assert info.value.key == str(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config_file(tmp_path / "missing.yaml")
    assert info.value.key == str(tmp_path / "missing.yaml")


def test_apply_overrides_sets_nested_keys_without_touching_the_original():
    raw = copy.deepcopy(BASE)
    result = apply_overrides(raw, {"estimator.params.lr": 0.01, "hisso.window": 8, "evaluation.split": "test"})
    assert result["estimator"]["params"]["lr"] == 0.01
    assert result["hisso"]["window"] == 8
    assert raw == BASE
    with pytest.raises(ConfigError, match="did you mean 'hisso'") as info:
        apply_overrides(raw, {"hiso.window": 8})
    assert info.value.key == "hiso"
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw, {"hisso.window.size": 8})
    assert info.value.key == "hisso.window"


# -- property tests ------------------------------------------------------------------------------

_ACCEPTED = {
    "": set(SECTIONS),
    "estimator": set(_SECTION_KEYS["estimator"]),
    "estimator.params": set(__import__("psann").PSANNRegressor._get_param_names()) | {"hidden_width", "hidden_channels"},
    "hisso": {f for f in HISSOOptions.__dataclass_fields__} | {"enabled", "trans_cost"},
    "hisso.supervised": set(WarmStartOptions.__dataclass_fields__),
    "data": set(_SECTION_KEYS["data"]),
    "training": set(_SECTION_KEYS["training"]),
    "evaluation": set(_SECTION_KEYS["evaluation"]),
}

_key_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="."),
                    min_size=1, max_size=20)


@settings(max_examples=120, deadline=None)
@given(section=st.sampled_from(sorted(_ACCEPTED)), key=_key_text, value=st.one_of(st.integers(), st.text(max_size=5), st.none()))
def test_any_unknown_key_in_any_section_is_rejected_naming_its_path(section, key, value):
    assume(key not in _ACCEPTED[section])
    raw = copy.deepcopy(BASE)
    if section:
        node = raw
        for part in section.split("."):
            node = node[part]
        node[key] = value
    else:
        raw[key] = value
    path = f"{section}.{key}" if section else key
    error = _error(raw)
    assert error.key == path
    assert error.reason.startswith("unknown key")


@settings(max_examples=60, deadline=None)
@given(window=st.one_of(st.integers(-5, 1), st.floats(allow_nan=True), st.text(max_size=4), st.booleans(),
                        st.lists(st.integers(), max_size=2)))
def test_any_hisso_window_that_is_not_an_int_of_at_least_2_is_rejected(window):
    error = _error(_config(**{"hisso.window": window}))
    assert error.key == "hisso.window"
    assert str(error) == f"hisso.window: expected an int >= 2, got {short_repr(window)}"


@settings(max_examples=40, deadline=None)
@given(window=st.integers(2, 10_000), trans_cost=st.floats(0, 1e3, allow_nan=False))
def test_valid_window_and_trans_cost_are_kept_exactly(window, trans_cost):
    config = parse_run_config(_config(**{"hisso.window": window, "evaluation.trans_cost": trans_cost}))
    assert config.hisso.window == window
    assert config.resolved["hisso"]["window"] == window
    assert config.trans_cost == trans_cost and math.isfinite(config.trans_cost)


# -- configs written for the earlier psann CLI -----------------------------------------------------


def test_earlier_cli_hidden_layers_is_wave_resnets_depth_with_a_warning_naming_depth():
    raw = _config(**{"estimator.target": "psann.WaveResNetRegressor", "estimator.params": {"hidden_layers": 3}})
    with pytest.warns(DeprecationWarning, match="'hidden_layers' is deprecated, use 'depth'"):
        config = parse_run_config(raw)
    assert config.estimator_params["depth"] == 3
    assert "hidden_layers" not in config.resolved["estimator"]["params"]


@pytest.mark.parametrize(
    "edits, key",
    [
        ({"episodic": {"enabled": True}}, "episodic"),
        ({"estimator.params": {"architecture": "wave"}}, "estimator.params.architecture"),
        ({"hisso.episodes_per_batch": 32}, "hisso.episodes_per_batch"),
    ],
)
def test_earlier_cli_keys_with_another_meaning_are_refused_with_the_reason(edits, key):
    raw = _config(**{k: v for k, v in edits.items() if k != "episodic"})
    if "episodic" in edits:
        raw["episodic"] = edits["episodic"]
    error = _error(raw)
    assert error.key == key
    assert error.reason.startswith("not supported: it ")


def test_hisso_with_per_position_outputs_is_refused_before_any_work():
    raw = _config(**{"estimator.target": "psann.WaveResNetRegressor", "estimator.params": {"preserve_shape": True}})
    error = _error(raw)
    assert error.key == "estimator.params.preserve_shape"
    assert "one action per sample" in error.reason


def test_trans_cost_null_means_not_set():
    config = parse_run_config(_config(**{"hisso.trans_cost": None, "hisso.transition_penalty": 0.02}))
    assert config.hisso.transition_penalty == 0.02


def test_reward_as_target_and_kwargs_is_bound_and_recorded():
    raw = _config(**{"hisso.reward": {"target": "psann.hisso.rewards:portfolio_reward", "kwargs": {"transition_penalty": 0.0}}})
    config = parse_run_config(raw)
    assert config.resolved["hisso"]["reward"] == {
        "target": "psann.hisso.rewards:portfolio_reward", "kwargs": {"transition_penalty": 0.0},
    }


@pytest.mark.parametrize(
    "reward, key",
    [
        ({"target": "psann.hisso.rewards:no_such_reward"}, "hisso.reward.target"),
        ({"target": "psann.hisso.rewards:portfolio_reward", "kwargs": {"no_such_arg": 1}}, "hisso.reward.kwargs"),
        ({"target": "psann.hisso.rewards:portfolio_reward", "kwarg": {}}, "hisso.reward.kwarg"),
        ({"kwargs": {}}, "hisso.reward.target"),
    ],
)
def test_bad_reward_mappings_are_refused_by_their_key(reward, key):
    error = _error(_config(**{"hisso.reward": reward}))
    assert error.key == key
