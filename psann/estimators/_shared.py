"""Parameter rules and helpers shared by the estimator classes, and the builders of the optional
parts (LSM expander, token embedder) that sit between the inputs and the network."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from psann.activations import SineConfig
from psann.errors import ValidationError
from psann.data import SEED_LIMIT
from psann.estimators._params import Anything, Bool, DeviceSpec, Int, Learnable, NoneOr, Options, Real, SineBounds
from psann.lsm import build_expander, expander_spec
from psann.text import SineTokenEmbedder

__all__ = [
    "DATA_FORMATS",
    "TRAINING_CONSTRAINTS",
    "build_embedder",
    "build_expander_for",
    "check_optional_parts",
    "sine_config",
]

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
    "random_state": NoneOr(Int(0, SEED_LIMIT - 1)),  # the project's one seed bound
    "device": DeviceSpec(),
    "mixed_precision": Bool(),
    "amp_dtype": Options(("float16", "bfloat16")),
    "compile": Bool(),
    "hidden_w0": Real(0.0, low_open=True),
    "amplitude_init": Real(0.0, low_open=True),
    "frequency_init": Real(0.0, low_open=True),
    "decay_init": Real(0.0, low_open=True),
    "decay_mode": Options(("abs", "relu", "none")),
    "learnable": Learnable(),
    "activation_bounds": SineBounds(),
    "preserve_shape": Bool(),
    "data_format": Options(DATA_FORMATS),
    "standardize": Bool(),
    "verbose": Int(0),
    # Optional parts (psann.state, psann.lsm, psann.text): None leaves the part out.
    "state": Anything("None, a psann.StateConfig or a mapping of its fields"),
    "state_reset": Options(("batch", "epoch", "none")),
    "stream_lr": NoneOr(Real(0.0)),
    "expander": Anything("None, an LSM expander spec (mapping or psann.LSMSpec) or an nn.Module"),
    "lsm_lr": NoneOr(Real(0.0, low_open=True)),
    "embedder": Anything("None, a psann.SineTokenEmbedder or a mapping of its fields"),
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


def check_optional_parts(est: Any) -> None:
    """Check the optional parts' parameters (``expander``, ``lsm_lr``, ``embedder``) before any work.

    A mapping or LSMSpec expander is validated field by field (``expander.sparsity``), an embedder
    mapping likewise (``embedder.dim``); errors only the data can reveal (a conv2d expander on rows,
    a pooled embedder before a convolution) are raised at fit, keyed the same way.
    """
    if est.expander is not None:
        expander_spec(est.expander)
    elif est.lsm_lr is not None:
        raise ValidationError(
            "lsm_lr", f"{type(est).__name__} got lsm_lr={est.lsm_lr!r} without an expander; set expander or leave lsm_lr None"
        )
    if est.embedder is not None:
        embedder = SineTokenEmbedder.coerce(est.embedder)
        if embedder.pool and getattr(est, "preserve_shape", False):
            raise ValidationError(
                "embedder.pool", "preserve_shape=True needs one embedding per position; use pool=False"
            )


def build_embedder(est: Any) -> nn.Module | None:
    """A fresh module for the ``embedder`` parameter (a copy of an instance: fit never mutates it)."""
    if est.embedder is None:
        return None
    return copy.deepcopy(SineTokenEmbedder.coerce(est.embedder))


def build_expander_for(est: Any, sample: torch.Tensor, device: torch.device) -> nn.Module | None:
    """The expander for inputs like ``sample`` (a batch of what the network would otherwise see).

    Dense expanders act on features (rows) or, for channels-first samples, on channels per
    position; conv2d expanders need (N, C, H, W). The masks are drawn from the spec's random_state,
    else from the fit's seed. A module (an expander instance or a custom one) is copied, so the
    parameter is never trained, and checked on ``sample``: it must keep the batch dimension and the
    rank.
    """
    if est.expander is None:
        return None
    spec = expander_spec(est.expander)
    shape = tuple(sample.shape[1:])
    if isinstance(est.expander, nn.Module):  # an LSMExpander instance keeps its masks and weights
        module = copy.deepcopy(est.expander).to(device)
        try:
            with torch.no_grad():
                out = module(sample)
        except Exception as exc:  # any failure of user code: reported with the input shape
            dims = ", ".join(map(str, shape))
            raise ValidationError("expander", f"the module failed on inputs of shape (N, {dims}): {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.dim() != sample.dim() or out.shape[0] != sample.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(
                "expander", f"expected the module to map {tuple(sample.shape)} to (N, width, ...) of the same rank, got {got}"
            )
        return module
    if spec.kind == "conv2d" and sample.dim() != 4:
        raise ValidationError(
            "expander.kind",
            f"'conv2d' needs image inputs (N, C, H, W) (ResConvPSANNRegressor on images); "
            f"{type(est).__name__} gives its network inputs of shape {shape}; use kind='dense'",
        )
    return build_expander(spec, int(sample.shape[1]), seed=getattr(est, "seed_", None)).to(device)
