"""Saved estimators on shared storage and tampered files: umask modes, overwrite refusing foreign
folders, metadata.json read as a schema and checked against weights.pt before anything is built."""

from __future__ import annotations

import copy
import json
import os
import resource
import stat
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psann import PSANNRegressor, ResConvPSANNRegressor, WaveResNetRegressor
from psann.errors import ValidationError
from psann.estimators._persistence import FORMAT_VERSION

RNG = np.random.default_rng(0)
ROWS = RNG.normal(size=(32, 3)).astype(np.float32)
SEQS = RNG.normal(size=(32, 2, 6)).astype(np.float32)
IDS = RNG.integers(0, 9, size=(32, 5))
COMMON = dict(epochs=1, batch_size=16, device="cpu", random_state=0)


def _save(est, X, path, **fit):
    est.fit(X, RNG.normal(size=len(X)).astype(np.float32), **fit)
    est.save(path)
    return est


def _dense(tmp_path, **kw):
    return _save(PSANNRegressor(hidden_layers=2, hidden_units=8, **COMMON, **kw), ROWS, tmp_path / "m")


def _meta(path):
    return json.loads((path / "metadata.json").read_text())


def _write_meta(path, metadata):
    (path / "metadata.json").write_text(json.dumps(metadata))


def _load_error(cls, path) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        cls.load(path)
    return err.value


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- file modes and overwrite ---------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_folder_and_files_get_the_umask_mode_not_mkdtemp_0700(tmp_path, umask):
    est = _dense(tmp_path)
    est.save(tmp_path / "m", overwrite=True)  # the replacing path renames a staging folder too
    for path in (tmp_path / "m", tmp_path / "m" / "weights.pt", tmp_path / "m" / "metadata.json"):
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))} != {oct(expected)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: (p.mkdir(), (p / "data.csv").write_text("a,b\n")),
        lambda p: (p.mkdir(), (p / "metadata.json").write_text('{"format_version": 99, "class": "X"}')),
        lambda p: (p.mkdir(), (p / "metadata.json").write_text('{"title": "my dataset"}')),
        lambda p: p.mkdir(),
        lambda p: p.write_text("not a folder"),
    ],
    ids=["data-folder", "unknown-format", "other-metadata", "empty-folder", "file"],
)
def test_overwrite_refuses_what_is_not_a_saved_estimator_and_deletes_nothing(tmp_path, make):
    est = PSANNRegressor(hidden_layers=1, hidden_units=4, **COMMON).fit(ROWS, ROWS[:, 0])
    target = tmp_path / "target"
    make(target)
    before = {p.name: p.read_bytes() for p in ([target] if target.is_file() else target.iterdir())}
    with pytest.raises(FileExistsError, match=r"target exists and is not a saved estimator.*nothing was changed"):
        est.save(target, overwrite=True)
    after = {p.name: p.read_bytes() for p in ([target] if target.is_file() else target.iterdir())}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]  # no staging or backup left


def test_overwrite_replaces_a_saved_estimator(tmp_path):
    first = _dense(tmp_path)
    second = PSANNRegressor(hidden_layers=1, hidden_units=5, **COMMON).fit(ROWS, ROWS[:, 1])
    second.save(tmp_path / "m", overwrite=True)
    np.testing.assert_array_equal(PSANNRegressor.load(tmp_path / "m").predict(ROWS), second.predict(ROWS))
    assert first.hidden_units != PSANNRegressor.load(tmp_path / "m").hidden_units


# -- the schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, -1, FORMAT_VERSION + 1, "3", 3.0, True, None, [3]])
def test_unknown_format_versions_are_refused_naming_the_field(tmp_path, version):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["format_version"] = version
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json: format_version"
    assert "upgrade psann-sweeps" in err.reason if version == FORMAT_VERSION + 1 else f"[1, {FORMAT_VERSION}]" in err.reason


def test_unknown_params_key_is_refused_with_did_you_mean(tmp_path):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["params"]["hiden_units"] = metadata["params"].pop("hidden_units")
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json: params.hiden_units" and "did you mean 'hidden_units'" in err.reason


@pytest.mark.parametrize(
    "field, value, expected_key",
    [
        ("fitted.dim_in", "3", "fitted.dim_in"),
        ("fitted.y_was_1d", 1, "fitted.y_was_1d"),
        ("fitted.input_shape", [], "fitted.input_shape"),
        ("scaler.mean", [0.0, 1.0], "scaler.mean"),
        ("scaler.std", [[1.0], [1.0], [1.0]], "scaler.std"),
        ("params.hidden_units", 0, "params.hidden_units"),
        ("params.learnable", 5, "params.learnable"),
        ("params.activation_bounds", {"frequency": [2.0, 1.0]}, "params.activation_bounds"),
        ("hisso", "yes", "hisso"),
        ("fitted", [], "fitted"),
    ],
)
def test_a_wrong_field_is_a_validation_error_naming_it(tmp_path, field, value, expected_key):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    section, _, name = field.partition(".")
    if name:
        metadata[section][name] = value
    else:
        metadata[section] = value
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == f"metadata.json: {expected_key}", str(err)
    assert "metadata.json" in err.reason  # the file's path


def test_metadata_that_is_not_an_object_is_keyed_by_the_file(tmp_path):
    _dense(tmp_path)
    (tmp_path / "m" / "metadata.json").write_text("[1, 2]")
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json" and "expected a JSON object" in err.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_in_the_metadata_names_the_field_and_the_override(tmp_path):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["params"]["device"] = "cuda"
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json: params.device" and "pass device= to load" in err.reason
    assert PSANNRegressor.load(tmp_path / "m", device="cpu").device_ == torch.device("cpu")


# -- metadata against weights.pt ------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("fitted.dim_in", 4),
        ("fitted.dim_out", 2),
        ("params.hidden_units", 6),
        ("params.hidden_layers", 3),
        ("scaler.shape", [2]),
    ],
)
def test_architecture_that_disagrees_with_the_weights_names_the_field_and_the_tensor(tmp_path, field, value):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    section, name = field.split(".")
    metadata[section][name] = value
    if field == "scaler.shape":
        metadata["scaler"]["mean"] = metadata["scaler"]["mean"][:2]
        metadata["scaler"]["std"] = metadata["scaler"]["std"][:2]
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == f"metadata.json: {field}", str(err)
    assert "weights.pt does not match its metadata" in err.reason


def test_a_mismatched_tensor_is_reported_with_both_shapes(tmp_path):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["params"]["hidden_units"] = 6
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert "has shape (8, 3), params.hidden_units describes (6, 3)" in err.reason


def test_the_grown_depth_of_a_wave_resnet_is_checked_against_the_blocks(tmp_path):
    est = WaveResNetRegressor(hidden_units=8, depth=3, progressive_depth_initial=1, progressive_depth_interval=1, **COMMON)
    _save(est, ROWS, tmp_path / "m")
    metadata = _meta(tmp_path / "m")
    metadata["fitted"]["depth"] = metadata["fitted"]["depth"] + 1
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(WaveResNetRegressor, tmp_path / "m")
    assert err.key == "metadata.json: fitted.depth" and "has no tensor 'net.blocks." in err.reason


def test_an_input_shape_that_does_not_give_dim_in_is_refused(tmp_path):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["fitted"]["input_shape"] = [3, 2]
    _write_meta(tmp_path / "m", metadata)
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json: fitted.input_shape" and "fitted.dim_in = 3" in err.reason


def test_a_huge_hidden_units_is_refused_without_allocating(tmp_path):
    _dense(tmp_path)
    metadata = _meta(tmp_path / "m")
    metadata["params"]["hidden_units"] = 10**9  # 4 GB per hidden layer, 4 EB between two of them
    _write_meta(tmp_path / "m", metadata)
    started = time.perf_counter()
    err = _load_error(PSANNRegressor, tmp_path / "m")
    assert err.key == "metadata.json: params.hidden_units" and "largest dimension in weights.pt (8)" in err.reason
    assert time.perf_counter() - started < 5


def test_the_meta_device_build_compares_a_huge_network_without_allocating(tmp_path):
    # A weights file with an empty tensor (0, 10**7) lets hidden_units = 10**7 pass the size bound:
    # the network described (a 10**7 x 10**7 hidden layer, 400 TB) is then only built on the meta
    # device, and its first mismatching tensor reported.
    _dense(tmp_path)
    path = tmp_path / "m"
    state = torch.load(path / "weights.pt", weights_only=True)
    state["zzz_padding"] = torch.empty(0, 10**7)
    torch.save(state, path / "weights.pt")
    metadata = _meta(path)
    metadata["params"]["hidden_units"] = 10**7
    _write_meta(path, metadata)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = _load_error(PSANNRegressor, path)
    assert err.key == "metadata.json: params.hidden_units"
    assert "has shape (8, 3), params.hidden_units describes (10000000, 3)" in err.reason
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kb < 500_000  # a real build of even the first layer (10**7 x 3) would not show here;
    # the hidden layer (10**14 floats) could not be allocated at all


def test_weights_that_are_not_a_state_dict_are_a_clear_error(tmp_path):
    _dense(tmp_path)
    torch.save([torch.zeros(2)], tmp_path / "m" / "weights.pt")
    with pytest.raises(ValueError, match="weights.pt is corrupt or not a weights file: expected a state_dict"):
        PSANNRegressor.load(tmp_path / "m")


# -- fuzzing: every field of real files -----------------------------------------------------------

MUTATIONS = {
    "missing": ...,
    "null": None,
    "string": "junk",
    "float": 1.5,
    "bool": True,
    "negative": -1,
    "zero": 0,
    "huge": 10**9,
    "beyond_int64": 2**70,
    "nested_junk": [1, {"a": [None]}],
    "mapping": {"x": 1},
}


def _fields(value, field=""):
    """Every dotted field of a JSON value; lists of numbers (scaler values) contribute their first item."""
    if field:
        yield field
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _fields(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list) and value:
        yield from _fields(value[0], f"{field}[0]")


def _mutate(metadata, field, mutation):
    mutated = copy.deepcopy(metadata)
    parts = field.replace("[0]", ".[0]").split(".")
    parent = mutated
    for part in parts[:-1]:
        parent = parent[0] if part == "[0]" else parent[part]
    last = parts[-1]
    if last == "[0]":
        if mutation is ...:
            parent.pop(0)
        else:
            parent[0] = mutation
    elif mutation is ...:
        del parent[last]
    else:
        parent[last] = copy.deepcopy(mutation)
    return mutated


def _names(err: ValidationError, field: str, aliases: dict[str, str]) -> bool:
    """The error is keyed by the mutated field, a field inside it or the field it sits in; or, for
    a disagreement between two fields, keyed by the other one with the mutated field in its text."""
    assert err.key.startswith("metadata.json: "), err.key
    named = err.key[len("metadata.json: "):]
    plain = field.replace("[0]", "")
    if plain.startswith(named) or named.startswith(plain):
        return True
    if plain in err.reason or plain.rpartition(".")[0] in err.reason.split(" (in ")[0]:
        return True  # the field, or the part it configures (params.embedder for params.embedder.pool)
    if not (plain.startswith("params.") and named.startswith("params.")):
        return False
    # The estimator's own rules name parameters without the params. prefix, and a deprecated
    # alias by its canonical name.
    name = plain.split(".")[-1]
    return name in err.reason or aliases.get(name) == named.split(".")[1]


FUZZED = {
    "dense_with_expander": lambda: (
        PSANNRegressor(hidden_layers=1, hidden_units=6, expander={"output_dim": 5, "hidden_layers": 2}, lsm_lr=0.01, **COMMON),
        ROWS, {},
    ),
    "wave_resnet_embedder_grown": lambda: (
        WaveResNetRegressor(hidden_units=6, depth=2, progressive_depth_initial=1, progressive_depth_interval=1,
                            embedder={"dim": 4, "learnable": True}, **COMMON),
        IDS, {},
    ),
    "res_conv_stateful": lambda: (ResConvPSANNRegressor(conv_channels=4, depth=1, state={"rho": 0.5}, **COMMON), SEQS, {}),
    "dense_hisso": lambda: (
        PSANNRegressor(hidden_layers=1, hidden_units=6, **COMMON),
        ROWS,
        dict(hisso=True, context=np.cumprod(1 + 0.01 * RNG.normal(size=(32, 2)), axis=0).astype(np.float32),
             hisso_options=dict(window=4, batch_episodes=2, updates_per_epoch=1, supervised={"epochs": 1})),
    ),
}


# A mutated deprecated alias (hidden_width) warns as any use of it does; that is not under test.
# Two of the four run in the fast suite (about 8 s); all four with -m slow (about 30 s).
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    "kind", [k if k.startswith("dense") else pytest.param(k, marks=pytest.mark.slow) for k in sorted(FUZZED)]
)
def test_fuzzed_metadata_fails_naming_the_field_or_loads(kind, tmp_path):
    est, X, fit = FUZZED[kind]()
    if fit.get("hisso"):
        est.fit(X, RNG.normal(size=(len(X), 2)).astype(np.float32), **fit)
    else:
        est.fit(X, RNG.normal(size=len(X)).astype(np.float32))
    path = tmp_path / "m"
    est.save(path)
    original = _meta(path)
    expected = est.predict(X)
    wrong = []
    for field in _fields(original):
        for label, mutation in MUTATIONS.items():
            _write_meta(path, _mutate(original, field, mutation))
            try:
                loaded = type(est).load(path)
            except ValidationError as err:
                if not _names(err, field, type(est)._deprecated_params):
                    wrong.append(f"{field} <- {label}: named {err.key!r}: {err}")
                continue
            except Exception as exc:  # noqa: BLE001 - the point: nothing but ValidationError
                wrong.append(f"{field} <- {label}: {type(exc).__name__}: {exc}")
                continue
            try:  # a harmless mutation: the model still predicts (values may differ, e.g. w0)
                assert loaded.predict(X).shape == expected.shape
            except Exception as exc:  # noqa: BLE001
                wrong.append(f"{field} <- {label}: loaded, then predict failed: {type(exc).__name__}: {exc}")
    assert not wrong, "\n".join(wrong[:40]) + f"\n({len(wrong)} in all)"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def saved_with_expander(tmp_path_factory):
    path = tmp_path_factory.mktemp("hyp") / "m"
    est = PSANNRegressor(hidden_layers=1, hidden_units=6, expander={"output_dim": 5}, **COMMON).fit(ROWS, ROWS[:, 0])
    est.save(path)
    return path, _meta(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_value_in_any_field_is_a_validation_error_or_loads(saved_with_expander, data):
    path, original = saved_with_expander
    field = data.draw(st.sampled_from(list(_fields(original))), label="field")
    value = data.draw(JSON_VALUES, label="value")
    _write_meta(path, _mutate(original, field, value))
    try:
        PSANNRegressor.load(path).predict(ROWS)
    except ValidationError as err:
        assert _names(err, field, PSANNRegressor._deprecated_params), str(err)
    finally:
        _write_meta(path, original)
