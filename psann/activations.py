"""The PSANN sine activation and the SIREN initialisation rule.

Per output neuron j, applied to a pre-activation z::

    y = A_j * exp(-d_j * g(z)) * sin(f_j * z)     g(z) = |z| ("abs"), relu(z) ("relu") or 0 ("none")

A, f and d are stored unconstrained and mapped through softplus, so they stay positive whatever the
optimiser does. The parameters broadcast along one feature dimension, so the same module serves
dense (N, F) tensors and convolutional (N, C, *) or (N, *, C) tensors. The computation itself, with
its hand-written backward, lives in psann/_sine_kernel.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from psann._sine_kernel import sine_activation

__all__ = [
    "SineActivation",
    "SineConfig",
    "SineLayer",
    "W0Scale",
    "siren_init_",
    "inverse_softplus",
]

_PARAM_NAMES = ("amplitude", "frequency", "decay")
_DECAY_MODES = ("abs", "relu", "none")


def inverse_softplus(value: float) -> float:
    """Return x such that softplus(x) == value (value > 0)."""
    if value <= 0:
        raise ValueError(f"inverse_softplus needs a positive value, got {value!r}")
    # log(expm1(v)) loses precision for large v; softplus is the identity there.
    return value if value > 20.0 else math.log(math.expm1(value))


def _normalise_learnable(learnable: str | Iterable[str]) -> frozenset[str]:
    if isinstance(learnable, str):
        key = learnable.lower()
        if key == "all":
            return frozenset(_PARAM_NAMES)
        if key == "none":
            return frozenset()
        learnable = [key]
    names = frozenset(str(name).lower() for name in learnable)
    unknown = sorted(names - set(_PARAM_NAMES))
    if unknown:
        raise ValueError(
            f"learnable must be 'all', 'none' or a subset of {list(_PARAM_NAMES)}; "
            f"got unknown name(s) {unknown}"
        )
    return names


@dataclass(frozen=True)
class SineConfig:
    """Options of the sine activation, shared by every layer of a network."""

    amplitude_init: float = 1.0  # A at initialisation (after softplus)
    frequency_init: float = 1.0  # f at initialisation (after softplus; +1e-6 keeps f > 0)
    decay_init: float = 0.1  # d at initialisation (after softplus)
    decay_mode: str = "abs"  # g(z): "abs", "relu" or "none"
    learnable: str | tuple[str, ...] = "all"  # "all", "none" or a subset of amplitude/frequency/decay
    # Optional clamps after softplus: {"amplitude": (lo, hi), ...}; None on either side = open.
    bounds: Mapping[str, tuple[float | None, float | None]] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("amplitude_init", "frequency_init", "decay_init"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"SineConfig.{name} must be a finite number > 0. Got {value!r} instead.")
        if self.decay_mode not in _DECAY_MODES:
            raise ValueError(
                f"SineConfig.decay_mode must be one of {list(_DECAY_MODES)}. Got {self.decay_mode!r} instead."
            )
        _normalise_learnable(self.learnable)
        if self.bounds is not None:
            for key, pair in self.bounds.items():
                if key not in _PARAM_NAMES:
                    raise ValueError(
                        f"SineConfig.bounds keys must be in {list(_PARAM_NAMES)}. Got {key!r} instead."
                    )
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(f"SineConfig.bounds[{key!r}] must be a (low, high) pair. Got {pair!r}.")
                low, high = pair
                if low is not None and high is not None and low > high:
                    raise ValueError(f"SineConfig.bounds[{key!r}] has low > high: {pair!r}")


class SineActivation(nn.Module):
    """Sine activation with per-neuron amplitude, frequency and decay.

    Args:
        features: number of neurons (size of the feature dimension).
        config: activation options; defaults follow DESIGN.md section 3.
        feature_dim: the dimension of the input that indexes neurons: -1 for dense (N, F) and
            channels-last tensors, 1 for channels-first (N, C, *) tensors.
    """

    def __init__(self, features: int, config: SineConfig | None = None, *, feature_dim: int = -1) -> None:
        super().__init__()
        if not isinstance(features, int) or features < 1:
            raise ValueError(f"SineActivation needs features >= 1. Got {features!r} instead.")
        self.features = features
        self.config = config or SineConfig()
        self.feature_dim = feature_dim
        learnable = _normalise_learnable(self.config.learnable)
        inits = {
            "amplitude": inverse_softplus(self.config.amplitude_init),
            "frequency": inverse_softplus(self.config.frequency_init),
            "decay": inverse_softplus(self.config.decay_init),
        }
        for name in _PARAM_NAMES:
            tensor = torch.full((features,), inits[name], dtype=torch.float32)
            if name in learnable:
                self.register_parameter(f"_{name}", nn.Parameter(tensor))
            else:
                self.register_buffer(f"_{name}", tensor)
        self._bounds = dict(self.config.bounds or {})
        # The same bounds as a hashable constant for the kernel (torch.compile guards on it).
        self._bounds_rows = tuple(
            None if name not in self._bounds else tuple(self._bounds[name]) for name in _PARAM_NAMES
        )

    def _positive(self, name: str) -> torch.Tensor:
        value = F.softplus(getattr(self, f"_{name}"))
        if name == "frequency":
            value = value + 1e-6
        if name in self._bounds:
            low, high = self._bounds[name]
            value = value.clamp(min=low, max=high)
        return value

    @property
    def amplitude(self) -> torch.Tensor:
        return self._positive("amplitude")

    @property
    def frequency(self) -> torch.Tensor:
        return self._positive("frequency")

    @property
    def decay(self) -> torch.Tensor:
        return self._positive("decay")

    def _check_input(self, z: torch.Tensor) -> None:
        dim = self.feature_dim if self.feature_dim >= 0 else z.dim() + self.feature_dim
        if not 0 <= dim < z.dim() or z.shape[dim] != self.features:
            raise ValueError(
                f"SineActivation expected {self.features} features on dim {self.feature_dim}; "
                f"got input of shape {tuple(z.shape)}"
            )

    def forward(self, z: torch.Tensor, w0: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the activation to ``z``, or to ``w0 * z`` when a 0-d tensor w0 > 0 is given.

        w0 is folded into the frequency and decay (exact, as g is positively homogeneous), so the
        scaled call costs no full-size multiply. Eagerly, forward and backward are one autograd
        Function (psann/_sine_kernel.py; double backward recomputes through autograd); under
        torch.compile, the plain formula, which inductor fuses.
        """
        self._check_input(z)
        return sine_activation(
            z,
            self._amplitude,
            self._frequency,
            self._decay,
            decay_mode=self.config.decay_mode,
            feature_dim=self.feature_dim,
            bounds=self._bounds_rows,
            w0=w0,
        )

    def extra_repr(self) -> str:
        return f"features={self.features}, decay_mode={self.config.decay_mode!r}, feature_dim={self.feature_dim}"


@torch.no_grad()
def siren_init_(linear: nn.Linear | nn.Conv1d | nn.Conv2d, *, w0: float, is_first: bool) -> None:
    """Initialise a layer's weights by the SIREN rule, in place.

    The first layer draws from U(-1/fan_in, 1/fan_in) and its pre-activation is multiplied by w0
    (typically 30). Hidden layers draw from U(-sqrt(6/fan_in)/w0, sqrt(6/fan_in)/w0) and their
    pre-activation is multiplied by the same w0, so sin(w0 * Wx) has unit-scale arguments at every
    depth. Biases draw from the same range as the weights.
    """
    if w0 <= 0:
        raise ValueError(f"siren_init_ needs w0 > 0. Got {w0!r} instead.")
    fan_in = linear.weight[0].numel()
    bound = 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / w0
    linear.weight.uniform_(-bound, bound)
    if linear.bias is not None:
        linear.bias.uniform_(-bound, bound)


class W0Scale(nn.Module):
    """Holds a layer's w0 in a non-persistent 0-d buffer; the base of SineLayer and SineConv.

    The w0 warm-up changes w0 every epoch. In a tensor, updated in place, that costs a compiled
    network no recompile (a Python float attribute would be a guarded constant). ``w0`` still reads
    and writes as a float. The buffer is not persistent, so state_dicts keep their keys; checkpoints
    record the stem's w0 in their metadata instead.
    """

    def _init_w0(self, w0: float) -> None:
        w0 = _check_w0(w0)
        self.register_buffer("_w0", torch.tensor(w0), persistent=False)
        # Hidden layers keep w0 = 1 for good: skip the scale there (measured: the scale costs two
        # small ops each way). Decided here, and switched on for good the first time w0 leaves 1,
        # so it changes at most once (one recompile at most).
        self._scaled = w0 != 1.0

    @property
    def w0(self) -> float:
        return float(self._w0)  # a device sync on CUDA: read it per epoch, not per step

    @w0.setter
    def w0(self, value: float) -> None:
        value = _check_w0(value)
        with torch.no_grad():
            self._w0.fill_(value)
        self._scaled = self._scaled or value != 1.0

    def _w0_or_none(self) -> torch.Tensor | None:
        return self._w0 if self._scaled else None


def _check_w0(value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"w0 must be a number. Got {value!r} of type {type(value).__name__} instead.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"w0 must be a finite number > 0. Got {value!r} instead.")
    return number


class SineLayer(W0Scale):
    """Linear map, scaled by w0, then the sine activation: ``sine(w0 * (W x + b))``.

    ``w0`` reads and writes as a float (kept in a buffer, see W0Scale), so schedules such as the
    WaveResNet w0 warm-up can change it between epochs.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        w0: float = 1.0,
        is_first: bool = False,
        sine: SineConfig | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self._init_w0(w0)
        self.is_first = is_first
        siren_init_(self.linear, w0=float(w0), is_first=is_first)
        self.activation = SineActivation(dim_out, sine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x), self._w0_or_none())

    def extra_repr(self) -> str:
        return f"w0={self.w0}, is_first={self.is_first}"
