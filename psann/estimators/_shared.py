"""Parameter rules and helpers shared by the estimator classes."""

from __future__ import annotations

from typing import Any

from psann.activations import SineConfig
from psann.estimators._params import Anything, Bool, DeviceSpec, Int, NoneOr, Options, Real

__all__ = ["DATA_FORMATS", "TRAINING_CONSTRAINTS", "sine_config"]

DATA_FORMATS = ("channels_first", "channels_last")

# Rules of the parameters every estimator has (training, device, sine activation, input layout).
TRAINING_CONSTRAINTS = {
    "epochs": Int(1),
    "batch_size": Int(1),
    "lr": Real(0.0, low_open=True),
    "weight_decay": Real(0.0),
    "lr_schedule": Options(("constant", "cosine", "linear")),
    "warmup_epochs": Real(0.0),
    "early_stopping": Bool(),
    "patience": Int(1),
    "grad_clip": NoneOr(Real(0.0, low_open=True)),
    "random_state": NoneOr(Int(0)),
    "device": DeviceSpec(),
    "mixed_precision": Bool(),
    "amp_dtype": Options(("float16", "bfloat16")),
    "compile": Bool(),
    "hidden_w0": Real(0.0, low_open=True),
    "amplitude_init": Real(0.0, low_open=True),
    "frequency_init": Real(0.0, low_open=True),
    "decay_init": Real(0.0, low_open=True),
    "decay_mode": Options(("abs", "relu", "none")),
    "learnable": Anything("'all', 'none' or a list of amplitude/frequency/decay"),
    "activation_bounds": Anything("None or {name: [low, high]}"),
    "preserve_shape": Bool(),
    "data_format": Options(DATA_FORMATS),
    "standardize": Bool(),
    "verbose": Int(0),
}


def sine_config(est: Any) -> SineConfig:
    """The estimator's sine-activation parameters as a SineConfig."""
    learnable = est.learnable if isinstance(est.learnable, str) else tuple(est.learnable)
    bounds = None
    if est.activation_bounds:
        bounds = {k: tuple(v) for k, v in dict(est.activation_bounds).items()}
    return SineConfig(
        amplitude_init=est.amplitude_init,
        frequency_init=est.frequency_init,
        decay_init=est.decay_init,
        decay_mode=est.decay_mode,
        learnable=learnable,
        bounds=bounds,
    )
