"""Sweep-file schema: every error names its key; search spaces map onto the right ray.tune domains."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _sweep_helpers import RUN_CONFIG, stage, write_run_config
from psann.errors import ValidationError
from psann.runconfig import ConfigError
from sweeps.spec import (
    SEARCH_KINDS,
    SweepError,
    _SCHEDULER_KEYS,
    _STAGE_KEYS,
    _TOP_KEYS,
    describe_plan,
    grid_size,
    load_sweep,
    parse_sweep,
    to_param_space,
    validate_trial_configs,
)

REPO = Path(__file__).resolve().parents[2]


def _raw(**top: Any) -> dict[str, Any]:
    raw = {
        "name": "t",
        "base_config": "run.yaml",
        "search_space": {"estimator.params.lr": {"loguniform": [0.001, 0.01]}},
        "stages": [stage("smoke"), stage("hisso", resources={"cpu": 1, "gpu": 1}, epochs=4,
                                         scheduler={"type": "asha", "max_t": 4, "grace_period": 1})],
    }
    raw.update(top)
    return raw


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_run_config(tmp_path)
    return tmp_path


def _parse(folder: Path, raw: dict[str, Any], profile: str | None = None):
    return parse_sweep(raw, path=folder / "sweep.yaml", profile=profile)


def _error(folder: Path, raw: dict[str, Any], profile: str | None = None) -> SweepError:
    with pytest.raises(SweepError) as info:
        spec = _parse(folder, raw, profile)
        validate_trial_configs(spec)
    error = info.value
    assert isinstance(error, ValidationError)
    assert str(error) == f"{error.key}: {error.reason}"  # the one template; the key is data
    return error


def _with_stage(index: int, **fields: Any) -> dict[str, Any]:
    raw = _raw()
    raw["stages"][index].update(fields)
    return raw


# --- every error path names its key -----------------------------------------------------------


def test_default_sweep_file_is_valid_with_and_without_local_profile():
    path = REPO / "configs" / "sweeps" / "hisso_wave.yaml"
    for profile in (None, "local"):
        spec = load_sweep(path, profile=profile)
        assert [s.name for s in spec.stages] == ["smoke", "hisso"]
        assert validate_trial_configs(spec) > 0
    local = load_sweep(path, profile="local").stage("hisso")
    assert local.allow_cpu and local.epochs == 12 and local.scheduler.max_t == 12


def test_unknown_top_level_key_suggests_the_close_one(folder):
    raw = _raw()
    raw["stagse"] = raw.pop("stages")
    error = _error(folder, raw)
    assert error.key == "stagse"
    assert "did you mean 'stages'" in str(error)


def test_unknown_stage_key_names_the_stage_index_and_suggests(folder):
    raw = _raw()
    raw["stages"][1]["num_sample"] = 3
    error = _error(folder, raw)
    assert error.key == "stages[1].num_sample"
    assert "did you mean 'num_samples'" in str(error)


def test_unknown_scheduler_key_suggests(folder):
    error = _error(folder, _with_stage(1, scheduler={"type": "asha", "max_t": 4, "grace": 2}))
    assert error.key == "stages.hisso.scheduler.grace"
    assert "did you mean 'grace_period'" in str(error)


def test_unknown_scheduler_type_is_refused(folder):
    error = _error(folder, _with_stage(1, scheduler={"type": "hyperband"}))
    assert error.key == "stages.hisso.scheduler.type"


@pytest.mark.parametrize(
    "entry, key, words",
    [
        ({"normal": [0, 1]}, "search_space.estimator.params.lr", "expected one of"),
        ({"uniform": [0.1, 0.2], "choice": [1]}, "search_space.estimator.params.lr", "expected one of"),
        ({"choice": []}, "search_space.estimator.params.lr.choice", "non-empty list"),
        ({"grid": 0.1}, "search_space.estimator.params.lr.grid", "non-empty list"),
        ({"uniform": [0.01]}, "search_space.estimator.params.lr.uniform", "[low, high]"),
        ({"uniform": ["a", "b"]}, "search_space.estimator.params.lr.uniform", "[low, high]"),
        ({"uniform": [0.01, 0.01]}, "search_space.estimator.params.lr.uniform", "low < high"),
        ({"loguniform": [0.1, 0.01]}, "search_space.estimator.params.lr.loguniform", "low < high"),
        ({"loguniform": [0, 0.01]}, "search_space.estimator.params.lr.loguniform", "low > 0"),
        ({"loguniform": [-1, 0.01]}, "search_space.estimator.params.lr.loguniform", "low > 0"),
        ({"randint": [1.5, 4]}, "search_space.estimator.params.lr.randint", "integer bounds"),
        ({"randint": [4, 4]}, "search_space.estimator.params.lr.randint", "low < high"),
    ],
)
def test_bad_search_space_entry_names_the_path_and_kind(folder, entry, key, words):
    error = _error(folder, _raw(search_space={"estimator.params.lr": entry}))
    assert error.key == key
    assert words in str(error)


@pytest.mark.parametrize(
    "resources, key",
    [
        ({"gpus": 1}, "stages.hisso.resources.gpus"),
        ({"cpu": -1}, "stages.hisso.resources.cpu"),
        ({"cpu": 1, "gpu": "one"}, "stages.hisso.resources.gpu"),
        ([1, 1], "stages.hisso.resources"),
    ],
)
def test_bad_stage_resources_name_the_key(folder, resources, key):
    error = _error(folder, _with_stage(1, resources=resources))
    assert error.key == key


def test_a_stage_asking_for_no_resources_is_refused(folder):
    # A trial with neither CPU nor GPU is never limited by the cluster: Tune would start every
    # trial of the stage at once.
    error = _error(folder, _with_stage(0, resources={"cpu": 0, "gpu": 0}))
    assert error.key == "stages.smoke.resources"


def test_fractional_gpu_is_accepted(folder):
    spec = _parse(folder, _with_stage(1, resources={"cpu": 1, "gpu": 0.25}))
    assert spec.stage("hisso").gpu == 0.25 and spec.stage("hisso").wants_gpu


def test_grace_period_larger_than_max_t_is_refused(folder):
    error = _error(folder, _with_stage(1, scheduler={"type": "asha", "max_t": 4, "grace_period": 5}))
    assert error.key == "stages.hisso.scheduler.grace_period"
    assert "max_t" in str(error)


def test_asha_max_t_below_the_stage_epochs_is_refused(folder):
    # ASHA stops every trial at max_t; a run planned for more epochs would never write its final
    # metrics, so every trial would end as PRUNED and none as SUCCESS.
    error = _error(folder, _with_stage(1, epochs=6, scheduler={"type": "asha", "max_t": 4}))
    assert error.key == "stages.hisso.scheduler.max_t"


def test_asha_max_t_below_the_base_config_epochs_is_refused(folder):
    raw = _raw()
    raw["stages"][1].pop("epochs")  # the base config plans 3 epochs
    raw["stages"][1]["scheduler"] = {"type": "asha", "max_t": 2}
    error = _error(folder, raw)
    assert error.key == "stages.hisso.scheduler.max_t"


def test_asha_max_t_defaults_to_the_stage_epochs(folder):
    spec = _parse(folder, _with_stage(1, epochs=5, scheduler="asha"))
    assert spec.stage("hisso").scheduler.max_t == 5


@pytest.mark.parametrize(
    "field, value, key",
    [
        ("num_samples", 0, "stages.hisso.num_samples"),
        ("epochs", "many", "stages.hisso.epochs"),
        ("max_concurrent_trials", 0, "stages.hisso.max_concurrent_trials"),
        ("max_failures", -1, "stages.hisso.max_failures"),
        ("allow_cpu", "yes", "stages.hisso.allow_cpu"),
        ("pass_rule", {"min_success_fraction": 1.5}, "stages.hisso.pass_rule.min_success_fraction"),
        ("pass_rule", {"min_succes_fraction": 0.5}, "stages.hisso.pass_rule.min_succes_fraction"),
        ("name", "my stage", "stages[1].name"),
    ],
)
def test_bad_stage_values_name_the_key(folder, field, value, key):
    error = _error(folder, _with_stage(1, **{field: value}))
    assert error.key == key


def test_duplicate_stage_names_are_refused(folder):
    raw = _raw()
    raw["stages"][1]["name"] = "smoke"
    error = _error(folder, raw)
    assert error.key == "stages"
    assert "unique" in str(error)


def test_empty_stage_list_is_refused(folder):
    assert _error(folder, _raw(stages=[])).key == "stages"


def test_unknown_profile_lists_the_known_ones(folder):
    error = _error(folder, _raw(profiles={"local": {"seed": 1}}), profile="cloud")
    assert "no profile named" in error.reason
    assert error.key == "profiles"
    assert "'cloud'" in str(error) and "local" in str(error)


def test_profile_for_a_missing_stage_names_it(folder):
    raw = _raw(profiles={"local": {"stages": {"hiso": {"num_samples": 1}}}})
    assert _error(folder, raw, profile="local").key == "profiles.local.stages.hiso"


def test_profile_with_an_unknown_key_suggests(folder):
    error = _error(folder, _raw(profiles={"local": {"sead": 1}}), profile="local")
    assert error.key == "profiles.local.sead"
    assert "did you mean 'seed'" in str(error)


def test_profile_merges_into_its_stage(folder):
    raw = _raw(profiles={"local": {"hang_timeout_s": 30, "stages": {"hisso": {"resources": {"gpu": 0}, "num_samples": 3}}}})
    plain, local = _parse(folder, raw), _parse(folder, raw, profile="local")
    assert plain.stage("hisso").gpu == 1 and plain.hang_timeout_s == 600
    assert local.stage("hisso").gpu == 0 and local.stage("hisso").cpu == 1 and local.stage("hisso").num_samples == 3
    assert local.hang_timeout_s == 30


def test_missing_base_config_is_named(folder):
    raw = _raw()
    raw.pop("base_config")
    assert _error(folder, raw).key == "base_config"
    error = _error(folder, _raw(base_config="nowhere.yaml"))
    assert error.key == "base_config" and "nowhere.yaml" in str(error)


def test_hang_timeout_must_be_positive(folder):
    assert _error(folder, _raw(hang_timeout_s=0)).key == "hang_timeout_s"


def test_search_value_that_makes_an_invalid_run_config_names_the_search_key(folder):
    raw = _raw(search_space={"estimator.params.hidden_units": {"choice": [8, 0]}})
    error = _error(folder, raw)
    assert error.key == "search_space.estimator.params.hidden_units"  # the key holds no value
    assert error.reason.startswith("0 makes an invalid run config for stage 'smoke': estimator.params.hidden_units: ")
    # The run-config error stays reachable as data.
    assert isinstance(error.__cause__, ConfigError) and error.__cause__.key == "estimator.params.hidden_units"


def test_search_path_unknown_to_the_run_config_names_the_search_key(folder):
    error = _error(folder, _raw(search_space={"estimator.params.lrr": {"choice": [0.1]}}))
    assert error.key == "search_space.estimator.params.lrr"
    assert "did you mean 'lr'" in error.reason


def test_search_path_with_an_unknown_section_names_the_search_key(folder):
    error = _error(folder, _raw(search_space={"hiso.window": {"choice": [8]}}))
    assert error.key == "search_space.hiso.window"
    assert error.__cause__.key == "hiso" and "did you mean 'hisso'" in error.reason


def test_uniform_over_an_integer_parameter_is_caught_before_any_trial(folder):
    # tune.uniform(8, 64) samples floats such as 23.7; integer bounds alone would validate.
    error = _error(folder, _raw(search_space={"estimator.params.hidden_units": {"uniform": [8, 64]}}))
    assert error.key == "search_space.estimator.params.hidden_units"
    assert error.reason.startswith("8.0 makes an invalid run config")


def test_bad_stage_override_is_blamed_on_the_stage_not_the_search_space(folder):
    raw = _with_stage(0, overrides={"hisso.windw": 8})
    error = _error(folder, raw)
    assert error.key == "stages.smoke.overrides.hisso.windw"
    assert error.reason.startswith("makes an invalid run config: unknown key (did you mean 'window'?)")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"hisso.window": 1}, "stages.smoke.overrides.hisso.window"),
        ({"hisso.supervised": {"epoch": 2}}, "stages.smoke.overrides.hisso.supervised.epoch"),
        ({"hiso.window": 8}, "stages.smoke.overrides.hiso.window"),  # the override path itself
        ({"hisso.window.size": 8}, "stages.smoke.overrides.hisso.window.size"),
    ],
)
def test_bad_stage_override_is_keyed_by_the_override_from_the_run_config_errors_key(folder, overrides, key):
    error = _error(folder, _with_stage(0, overrides=overrides))
    assert error.key == key
    assert isinstance(error.__cause__, ConfigError)


def test_bad_stage_epochs_reaching_the_run_config_is_keyed_by_the_stage_epochs(folder):
    # Stage epochs are checked >= 1 by the sweep schema; a run-config rule they break is still
    # blamed on the stage's epochs key, which the user wrote, not on a generated override.
    spec = _parse(folder, _raw())
    bad = dataclasses.replace(spec.stages[1], epochs=0)
    spec = dataclasses.replace(spec, stages=(spec.stages[0], bad))
    with pytest.raises(SweepError) as info:
        validate_trial_configs(spec)
    assert info.value.key == "stages.hisso.epochs"


def test_a_base_config_invalid_for_a_stage_is_keyed_under_base_config(tmp_path):
    write_run_config(tmp_path, hisso={**RUN_CONFIG["hisso"], "window": 1})
    error = _error(tmp_path, _raw())
    assert error.key == "base_config.hisso.window"
    assert "expected an int >= 2" in error.reason and "stage 'smoke'" in error.reason


def test_a_base_config_that_is_not_a_mapping_is_keyed_base_config(tmp_path):
    (tmp_path / "run.yaml").write_text("- a\n- list\n")
    error = _error(tmp_path, _raw())
    assert error.key == "base_config"
    assert "expected a mapping of sections" in error.reason


def test_sweep_errors_pickle_and_move_under_a_prefix():
    error = SweepError("[1].epochs", "expected an int >= 1, got 0")
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), back.key, back.reason) == (SweepError, error.key, error.reason)
    moved = error.under("stages")
    assert (type(moved), moved.key) == (SweepError, "stages[1].epochs")


def test_sweep_file_that_is_not_yaml_mapping_is_refused(tmp_path):
    write_run_config(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    assert info.value.key == str(path)  # a whole-file problem is keyed by the file
    with pytest.raises(SweepError, match="sweep file not found") as info:
        load_sweep(tmp_path / "absent.yaml")
    assert info.value.key == str(tmp_path / "absent.yaml")


def test_describe_plan_lists_every_stage_with_trials_and_resources(folder):
    spec = _parse(folder, _raw(search_space={"estimator.params.lr": {"grid": [0.001, 0.002, 0.003]}}))
    plan = "\n".join(describe_plan(spec))
    assert "stage smoke: 3 trials x {cpu: 1, gpu: 0}" in plan
    assert "stage hisso: 3 trials x {cpu: 1, gpu: 1}" in plan
    assert "ASHA(max_t=4" in plan


# --- search-space translation ------------------------------------------------------------------


def test_each_search_kind_maps_to_its_ray_tune_domain():
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

    space = to_param_space(
        {
            "a": {"choice": [1, 2, 3]},
            "b": {"grid": [0.1, 0.2]},
            "c": {"uniform": [0.0, 2.0]},
            "d": {"loguniform": [0.001, 0.1]},
            "e": {"randint": [2, 5]},
            "f": 7,
        }
    )
    assert isinstance(space["a"], Categorical) and space["a"].categories == [1, 2, 3]
    assert space["b"] == {"grid_search": [0.1, 0.2]}
    assert isinstance(space["c"], Float) and isinstance(space["c"].get_sampler(), Uniform)
    assert (space["c"].lower, space["c"].upper) == (0.0, 2.0)
    assert isinstance(space["d"], Float) and isinstance(space["d"].get_sampler(), LogUniform)
    assert (space["d"].lower, space["d"].upper) == (0.001, 0.1)
    assert isinstance(space["e"], Integer) and (space["e"].lower, space["e"].upper) == (2, 5)
    assert space["f"] == 7
    samples = space["e"].sample(size=200)
    assert set(samples) <= {2, 3, 4}  # randint's high bound is exclusive, as documented


_names = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)


@st.composite
def _search_entry(draw):
    kind = draw(st.sampled_from(SEARCH_KINDS))
    if kind in ("choice", "grid"):
        return {kind: draw(st.lists(st.integers(-5, 5) | st.floats(-1, 1, allow_nan=False), min_size=1, max_size=4))}
    if kind == "randint":
        low = draw(st.integers(-100, 100))
        return {kind: [low, low + draw(st.integers(1, 50))]}
    low = draw(st.floats(1e-6, 1e3, allow_nan=False, allow_infinity=False))
    high = low * draw(st.floats(1.01, 1e3, allow_nan=False, allow_infinity=False))
    if kind == "uniform" and draw(st.booleans()):
        low = -low
    return {kind: [low, high]}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(space=st.dictionaries(_names, _search_entry() | st.integers(), min_size=0, max_size=5))
def test_random_valid_search_spaces_parse_and_translate_within_bounds(folder, space):
    from ray.tune.search.sample import Domain

    spec = _parse(folder, _raw(search_space=copy.deepcopy(space)))
    assert spec.search_space == space
    domains = to_param_space(spec.search_space)
    assert set(domains) == set(space)
    expected_grid = 1
    for key, entry in space.items():
        domain = domains[key]
        if not isinstance(entry, dict):
            assert domain == entry
            continue
        kind, arg = next(iter(entry.items()))
        if kind == "grid":
            expected_grid *= len(arg)
            assert domain == {"grid_search": arg}
            continue
        assert isinstance(domain, Domain)
        value = domain.sample()
        if kind == "choice":
            assert value in arg
        else:
            assert arg[0] <= value <= arg[1]
    assert grid_size(spec.search_space) == expected_grid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=_names, where=st.sampled_from(["top", "stage", "scheduler"]))
def test_random_unknown_keys_are_refused_by_name(folder, key, where):
    allowed = {"top": _TOP_KEYS, "stage": _STAGE_KEYS, "scheduler": _SCHEDULER_KEYS}[where]
    if key in allowed:
        return
    raw = _raw()
    if where == "top":
        raw[key] = 1
        expected = key
    elif where == "stage":
        raw["stages"][0][key] = 1
        expected = f"stages[0].{key}"
    else:
        raw["stages"][1]["scheduler"][key] = 1
        expected = f"stages.hisso.scheduler.{key}"
    error = _error(folder, raw)
    assert error.key == expected
    assert "unknown key" in str(error)


def test_sweep_file_written_as_yaml_round_trips(folder):
    (folder / "sweep.yaml").write_text(yaml.safe_dump(_raw()))
    spec = load_sweep(folder / "sweep.yaml")
    assert spec.base_config_path == (folder / "run.yaml").resolve()
    assert spec.stage("hisso").scheduler.kind == "asha"


# --- the documentation lists exactly the keys the schema accepts -------------------------------


def _documented(section: str) -> list[str]:
    text = (REPO / "docs" / "sweeps.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    return [row.split("`")[1] for row in rows]


@pytest.mark.parametrize(
    "section, keys",
    [("Top-level keys", _TOP_KEYS), ("Stage keys", _STAGE_KEYS), ("Scheduler keys", _SCHEDULER_KEYS),
     ("Search kinds", SEARCH_KINDS)],
)
def test_docs_list_exactly_the_accepted_keys(section, keys):
    documented = _documented(section)
    assert sorted(documented) == sorted(keys)
    assert len(documented) == len(set(documented))


# --- issue 14: search, repeats, ranking window, top_k, report cadence ----------------------------


def test_trust_keys_default_and_parse(folder):
    spec = _parse(folder, _raw())
    assert (spec.search, spec.repeats, spec.rank_window, spec.top_k) == ("random", 1, 3, 3)
    assert spec.stage("hisso").report.every_epochs == 10 and spec.stage("hisso").report.every_seconds == 120
    spec = _parse(folder, _raw(search="optuna", repeats=3, rank_window=2, top_k=0,
                               report={"every_epochs": 2, "every_seconds": None}))
    assert (spec.search, spec.repeats, spec.rank_window, spec.top_k) == ("optuna", 3, 2, 0)
    assert spec.stage("smoke").report.every_epochs == 2 and spec.stage("smoke").report.every_seconds is None
    assert spec.trial_count(spec.stage("smoke")) == 3  # 1 sample x 1 grid x 3 repeats


def test_a_stage_report_cadence_wins_over_the_top_level_one(folder):
    raw = _with_stage(1, report={"every_epochs": 3})
    raw["report"] = {"every_epochs": 7, "every_seconds": 30}
    spec = _parse(folder, raw)
    assert spec.stage("smoke").report.every_epochs == 7
    hisso = spec.stage("hisso").report
    assert hisso.every_epochs == 3 and hisso.every_seconds == 30  # unset keys come from the top level


@pytest.mark.parametrize(
    "top, key, words",
    [
        ({"search": "tpe"}, "search", "random or optuna"),
        ({"repeats": 0}, "repeats", ">= 1"),
        ({"rank_window": 1.5}, "rank_window", "an int"),
        ({"top_k": -1}, "top_k", ">= 0"),
        ({"report": {"every_epoch": 2}}, "report.every_epoch", "did you mean 'every_epochs'"),
        ({"report": {"every_seconds": 0}}, "report.every_seconds", ">= 1"),
        ({"search": "optuna", "search_space": {"hisso.window": {"grid": [8, 16]}}}, "search_space.hisso.window",
         "grid is not supported"),
    ],
)
def test_bad_trust_keys_name_the_key(folder, top, key, words):
    error = _error(folder, _raw(**top))
    assert error.key == key and words in str(error)


def test_asha_milestones_are_the_rung_epochs():
    from sweeps.spec import SchedulerSpec

    assert SchedulerSpec("asha", max_t=12, grace_period=3, reduction_factor=3).milestones() == (3, 9)
    assert SchedulerSpec("asha", max_t=4, grace_period=1, reduction_factor=2).milestones() == (1, 2)
    assert SchedulerSpec().milestones() == ()


def test_report_cadence_is_every_n_epochs_or_t_seconds_whichever_first():
    from sweeps.spec import ReportSpec

    cadence = ReportSpec(every_epochs=3, every_seconds=10.0)
    assert not cadence.due(epochs_since=2, seconds_since=9.9)
    assert cadence.due(epochs_since=3, seconds_since=0.1)
    assert cadence.due(epochs_since=1, seconds_since=10.0)
    assert not ReportSpec(every_epochs=3, every_seconds=None).due(epochs_since=2, seconds_since=1e9)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_is_valid_with_each_of_its_profiles(path):
    raw = yaml.safe_load(path.read_text())
    for profile in (None, *(raw.get("profiles") or {})):
        assert validate_trial_configs(load_sweep(path, profile=profile)) > 0


def test_asha_defaults_are_the_benchmarked_trade_off(folder):
    from sweeps.spec import default_grace_period

    spec = _parse(folder, _with_stage(1, epochs=60, scheduler="asha"))
    scheduler = spec.stage("hisso").scheduler
    assert (scheduler.max_t, scheduler.grace_period, scheduler.reduction_factor) == (60, 12, 2)
    assert scheduler.milestones() == (12, 24, 48)
    assert default_grace_period(4) == 3 and default_grace_period(2) == 2  # a rank window, at most max_t
