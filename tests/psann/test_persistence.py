"""Save/load: weights plus JSON metadata, round trips, and clear errors for bad files."""

import json

import numpy as np
import pytest
import torch

from psann import PSANNRegressor, ResPSANNRegressor, WaveResNetRegressor
from psann.errors import ValidationError
from psann.estimators._persistence import FORMAT_VERSION


def _data(n=64, features=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    return X, np.sin(X.sum(axis=1)).astype(np.float32)


FITTED = {
    "dense": lambda: PSANNRegressor(hidden_layers=2, hidden_units=8, epochs=2, random_state=0, device="cpu"),
    "residual": lambda: ResPSANNRegressor(hidden_layers=2, hidden_units=8, epochs=2, drop_path=0.2, random_state=0, device="cpu"),
    # Progressive depth grows the net during fit: load must rebuild the grown depth.
    "wave_resnet_grown": lambda: WaveResNetRegressor(
        hidden_units=8, depth=3, epochs=3, progressive_depth_initial=1, progressive_depth_interval=1,
        w0_warmup_epochs=2, random_state=0, device="cpu",
    ),
}


@pytest.fixture
def fitted_dense(tmp_path):
    X, y = _data()
    est = FITTED["dense"]().fit(X, y)
    est.save(tmp_path / "model")
    return est, tmp_path / "model", X


@pytest.mark.parametrize("kind", sorted(FITTED))
def test_round_trip_gives_identical_predictions(kind, tmp_path):
    X, y = _data()
    est = FITTED[kind]().fit(X, y)
    est.save(tmp_path / "model")
    loaded = type(est).load(tmp_path / "model")
    assert type(loaded) is type(est)
    assert loaded.get_params() == est.get_params()
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert loaded.n_features_in_ == 3


def test_round_trip_keeps_the_grown_depth_and_w0(tmp_path):
    X, y = _data()
    est = FITTED["wave_resnet_grown"]().fit(X, y)
    est.save(tmp_path / "model")
    loaded = WaveResNetRegressor.load(tmp_path / "model")
    assert loaded.model_.net.depth == est.model_.net.depth
    assert loaded.model_.net.first_layer_w0 == est.model_.net.first_layer_w0


def test_round_trip_of_shaped_wave_resnet(tmp_path):
    X = np.random.default_rng(0).normal(size=(6, 3, 7)).astype(np.float32)
    y = X[:, :2] * 2
    est = WaveResNetRegressor(hidden_units=8, depth=1, epochs=2, preserve_shape=True, random_state=0, device="cpu").fit(X, y)
    est.save(tmp_path / "m")
    loaded = WaveResNetRegressor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    assert loaded.predict(X).shape == (6, 2, 7)


def test_saved_files_are_a_state_dict_and_json_metadata(fitted_dense):
    est, path, _ = fitted_dense
    metadata = json.loads((path / "metadata.json").read_text())
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["class"] == "PSANNRegressor"
    assert metadata["params"]["hidden_units"] == 8
    assert metadata["fitted"]["input_shape"] == [3]
    assert len(metadata["scaler"]["mean"]) == 3
    state = torch.load(path / "weights.pt", weights_only=True)
    assert set(state) == set(est.model_.state_dict())


def test_newer_format_version_is_a_clear_error(fitted_dense):
    _, path, _ = fitted_dense
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["format_version"] = FORMAT_VERSION + 1
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=rf"format_version {FORMAT_VERSION + 1}, newer than this library reads .*upgrade psann-sweeps"):
        PSANNRegressor.load(path)


def test_corrupt_metadata_is_a_clear_error(fitted_dense):
    _, path, _ = fitted_dense
    (path / "metadata.json").write_text('{"format_version": 1, "class": ')
    with pytest.raises(ValueError, match=r"metadata.json is corrupt \(not valid JSON"):
        PSANNRegressor.load(path)
    (path / "metadata.json").write_text('{"params": {}}')
    with pytest.raises(ValidationError) as err:
        PSANNRegressor.load(path)
    assert err.value.key == "metadata.json: format_version" and "missing" in err.value.reason


def test_truncated_weights_are_a_clear_error(fitted_dense):
    _, path, _ = fitted_dense
    data = (path / "weights.pt").read_bytes()
    (path / "weights.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="weights.pt is corrupt or not a weights file"):
        PSANNRegressor.load(path)


def test_weights_that_do_not_match_the_metadata_are_a_clear_error(fitted_dense):
    _, path, _ = fitted_dense
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["params"]["hidden_units"] = 16
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="does not match its metadata"):
        PSANNRegressor.load(path)


def test_loading_with_the_wrong_class_is_a_type_error(fitted_dense):
    _, path, _ = fitted_dense
    with pytest.raises(TypeError, match="holds a PSANNRegressor, not a WaveResNetRegressor; load it with PSANNRegressor.load"):
        WaveResNetRegressor.load(path)


def test_save_refuses_to_overwrite_unless_asked(fitted_dense):
    est, path, X = fitted_dense
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        est.save(path)
    other = FITTED["dense"]().set_params(random_state=1).fit(X, np.cos(X.sum(axis=1)))
    other.save(path, overwrite=True)
    np.testing.assert_array_equal(PSANNRegressor.load(path).predict(X), other.predict(X))
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]  # no staging leftovers


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved estimator"):
        PSANNRegressor.load(tmp_path / "nothing")


def test_saving_an_unfitted_estimator_is_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        PSANNRegressor().save(tmp_path / "m")


def test_load_onto_an_explicit_device(fitted_dense):
    est, path, X = fitted_dense
    loaded = PSANNRegressor.load(path, device=torch.device("cpu"))
    assert loaded.device_ == torch.device("cpu")
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
