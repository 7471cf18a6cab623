"""Save/load parity for every estimator with each optional part attached (expander, embedder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from psann import (
    LSMSpec,
    PSANNRegressor,
    ResConvPSANNRegressor,
    ResPSANNRegressor,
    SineTokenEmbedder,
    WaveResNetRegressor,
)
from psann.errors import ValidationError
from psann.estimators._persistence import FORMAT_VERSION

RNG = np.random.default_rng(0)
ROWS = RNG.normal(size=(32, 4)).astype(np.float32)
SEQS = RNG.normal(size=(32, 2, 6)).astype(np.float32)
IDS = RNG.integers(0, 9, size=(32, 6))

COMMON = dict(epochs=2, device="cpu", random_state=0)
ESTIMATORS = {
    "dense": lambda **kw: PSANNRegressor(hidden_layers=1, hidden_units=8, **COMMON, **kw),
    "residual": lambda **kw: ResPSANNRegressor(hidden_layers=1, hidden_units=8, drop_path=0.1, **COMMON, **kw),
    "wave_resnet": lambda **kw: WaveResNetRegressor(hidden_units=8, depth=1, **COMMON, **kw),
    "res_conv": lambda **kw: ResConvPSANNRegressor(conv_channels=4, depth=1, **COMMON, **kw),
}
PARTS = {
    "expander": dict(expander={"output_dim": 6, "sparsity": 0.5}, lsm_lr=0.01),
    "frozen_expander": dict(expander=LSMSpec(output_dim=5, hidden_layers=2, nonlinearity="tanh", freeze=True)),
    "embedder": dict(embedder={"dim": 4, "learnable": True}),
    "embedder_and_expander": dict(embedder=SineTokenEmbedder(4, pad_id=0), expander={"output_dim": 3}),
}


def _inputs(estimator: str, part: str) -> np.ndarray:
    if "embedder" in part:
        return IDS
    return SEQS if estimator == "res_conv" else ROWS


@pytest.mark.parametrize("part", sorted(PARTS))
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_round_trip_with_an_optional_part_predicts_identically(estimator, part, tmp_path):
    X = _inputs(estimator, part)
    y = RNG.normal(size=len(X)).astype(np.float32)
    est = ESTIMATORS[estimator](**PARTS[part]).fit(X, y)
    est.save(tmp_path / "m")
    loaded = type(est).load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    saved, restored = est.model_.state_dict(), loaded.model_.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k].cpu(), restored[k].cpu()) for k in saved)  # masks and weights
    metadata = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert metadata["format_version"] == FORMAT_VERSION == 3
    if "expander" in PARTS[part]:
        assert LSMSpec.coerce(metadata["params"]["expander"]) == LSMSpec.coerce(PARTS[part]["expander"])
        assert any(k.startswith("expander.mask_") for k in restored)
        assert loaded.model_.expander.spec.freeze == (part == "frozen_expander")
    if "embedder" in PARTS[part]:
        assert metadata["params"]["embedder"] == SineTokenEmbedder.coerce(PARTS[part]["embedder"]).config()
    assert loaded.model_.expander_lr == PARTS[part].get("lsm_lr")


def test_round_trip_of_a_conv2d_expander(tmp_path):
    images = RNG.normal(size=(8, 2, 5, 5)).astype(np.float32)
    est = ESTIMATORS["res_conv"](expander={"kind": "conv2d", "out_channels": 3, "kernel_size": 3, "sparsity": 0.4})
    est.fit(images, images.mean(axis=(1, 2, 3)))
    est.save(tmp_path / "m")
    loaded = ResConvPSANNRegressor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(images), est.predict(images))
    assert torch.equal(loaded.model_.expander.masks()[0], est.model_.expander.masks()[0])


def test_a_custom_module_expander_is_refused_at_save_naming_expander(tmp_path):
    est = ESTIMATORS["dense"](expander=nn.Linear(4, 6)).fit(ROWS, ROWS[:, 0])
    with pytest.raises(ValidationError) as err:
        est.save(tmp_path / "m")
    assert err.value.key == "expander" and "Linear" in str(err.value) and "LSMSpec" in str(err.value)
    assert not (tmp_path / "m").exists()


def test_a_format_2_file_without_optional_parts_still_loads(tmp_path):
    est = ESTIMATORS["dense"]().fit(ROWS, ROWS[:, 0])
    est.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    metadata["format_version"] = 2
    del metadata["fitted"]["expander_in"]
    for key in ("expander", "lsm_lr", "embedder"):
        del metadata["params"][key]  # written before these parameters existed
    meta_path.write_text(json.dumps(metadata))
    loaded = PSANNRegressor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(ROWS), est.predict(ROWS))
    assert loaded.model_.expander is None and loaded.expander is None


def test_an_expander_spec_without_its_input_width_is_a_clear_error(tmp_path):
    est = ESTIMATORS["dense"](expander={"output_dim": 6}).fit(ROWS, ROWS[:, 0])
    est.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "metadata.json"
    metadata = json.loads(meta_path.read_text())
    metadata["fitted"]["expander_in"] = None
    meta_path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="fitted.expander_in is missing"):
        PSANNRegressor.load(tmp_path / "m")


def test_an_expander_instance_is_used_as_built_and_saved_through_its_spec(tmp_path):
    from psann import LSMExpander

    instance = LSMExpander(4, {"output_dim": 5, "sparsity": 0.5}, seed=3)
    est = ESTIMATORS["dense"](expander=instance).fit(ROWS, ROWS[:, 0])
    assert torch.equal(est.model_.expander.masks()[0], instance.masks()[0])
    assert est.model_.expander is not instance
    est.save(tmp_path / "m")
    loaded = PSANNRegressor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(ROWS), est.predict(ROWS))
    with pytest.raises(ValidationError) as err:
        ESTIMATORS["dense"](expander=LSMExpander(6, {"output_dim": 5})).fit(ROWS, ROWS[:, 0])
    assert err.value.key == "expander" and "(N, 4)" in str(err.value) and "6 features" in str(err.value)
