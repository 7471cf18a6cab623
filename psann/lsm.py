"""LSM expanders: fixed sparse random feature maps placed in front of an estimator's network.

An expander is a stack of ``hidden_layers`` masked layers, each followed by a nonlinearity (sine,
tanh or relu). Every weight is multiplied by a fixed binary mask of density ``1 - sparsity`` drawn
once from ``random_state`` and kept as a buffer, so the sparsity pattern is saved with the weights
and never changes in training (masked entries get zero gradient). ``freeze=True`` also stops the
unmasked weights from training: the expander is then a fixed random projection (a liquid-state
machine's reservoir read out by the PSANN network).

Two kinds:

- ``"dense"`` (:class:`LSMExpander`): masked linear layers mapping F input features to
  ``output_dim`` features. On channels-first tensors (N, C, *) it acts on the channel dimension at
  every position (a masked 1x1 convolution).
- ``"conv2d"`` (:class:`LSMConv2dExpander`): masked ``kernel_size`` x ``kernel_size`` convolutions
  ("same" padding) mapping (N, C, H, W) to (N, ``out_channels``, H, W).

Example::

    expander = build_expander({"output_dim": 64, "sparsity": 0.8, "random_state": 0}, 8)
    expander(torch.randn(32, 8)).shape      # (32, 64)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from psann.errors import ValidationError, ValidationTypeError, short_repr, unknown_key

__all__ = ["LSMSpec", "LSMExpander", "LSMConv2dExpander", "build_expander"]

KINDS = ("dense", "conv2d")
NONLINEARITIES = ("sine", "tanh", "relu")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LSMSpec:
    """The JSON-able description of an expander; errors are keyed by field name (``sparsity``)."""

    kind: str = "dense"  # "dense" (masked linear layers) or "conv2d" (masked 2-D convolutions)
    output_dim: int | None = None  # dense: features out (required for kind="dense")
    out_channels: int | None = None  # conv2d: channels out (required for kind="conv2d")
    hidden_layers: int = 1  # number of masked layers (>= 1)
    hidden_units: int | None = None  # width of the layers before the last (None: the output width)
    sparsity: float = 0.8  # fraction of weights masked to zero, in [0, 1)
    nonlinearity: str = "sine"  # after every layer: "sine", "tanh" or "relu"
    kernel_size: int = 3  # conv2d: odd kernel size ("same" padding)
    random_state: int | None = None  # seed of the masks and initial weights (None: the estimator's seed)
    freeze: bool = False  # True: the expander's weights never train (a fixed random projection)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValidationError.expected("kind", f"one of {', '.join(map(repr, KINDS))}", self.kind)
        for name in ("output_dim", "out_channels", "hidden_units"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValidationError.expected(name, "None or an int >= 1", value)
        width_key = "output_dim" if self.kind == "dense" else "out_channels"
        if getattr(self, width_key) is None:
            raise ValidationError(width_key, f"expected an int >= 1 for kind={self.kind!r}, got None")
        other = "out_channels" if self.kind == "dense" else "output_dim"
        if getattr(self, other) is not None:
            raise ValidationError(
                other, f"kind={self.kind!r} takes {width_key}, not {other}; got {other}={getattr(self, other)!r}"
            )
        if not _is_int(self.hidden_layers) or self.hidden_layers < 1:
            raise ValidationError.expected("hidden_layers", "an int >= 1", self.hidden_layers)
        sparsity = self.sparsity
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            raise ValidationError.expected("sparsity", "a number in [0, 1)", sparsity)
        if self.nonlinearity not in NONLINEARITIES:
            raise ValidationError.expected(
                "nonlinearity", f"one of {', '.join(map(repr, NONLINEARITIES))}", self.nonlinearity
            )
        if not _is_int(self.kernel_size) or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValidationError.expected("kernel_size", "an odd int >= 1", self.kernel_size)
        if self.random_state is not None and (not _is_int(self.random_state) or self.random_state < 0):
            raise ValidationError.expected("random_state", "None or an int >= 0", self.random_state)
        if not isinstance(self.freeze, bool):
            raise ValidationError.expected("freeze", "a bool", self.freeze)

    @property
    def width(self) -> int:
        """The expander's output width: output_dim (dense) or out_channels (conv2d)."""
        return int(self.output_dim if self.kind == "dense" else self.out_channels)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what metadata.json and run configs hold)."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> "LSMSpec":
        """An LSMSpec from a mapping of its fields; an unknown field gets a did-you-mean error."""
        names = [f.name for f in fields(cls)]
        for key in value:
            if key not in names:
                raise unknown_key(key, names)
        return cls(**dict(value))

    @classmethod
    def coerce(cls, value: Any) -> "LSMSpec":
        """An LSMSpec as it is, or one built from a mapping of its fields."""
        if isinstance(value, LSMSpec):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise ValidationTypeError.expected("", "an LSMSpec or a mapping of its fields", value)


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "sine":
        return torch.sin(x)
    if name == "tanh":
        return torch.tanh(x)
    return torch.relu(x)


def _draw_mask(shape: tuple[int, ...], density: float, generator: torch.Generator) -> torch.Tensor:
    """A {0, 1} mask of ``shape`` (outputs first) with about ``density`` ones; every output keeps at
    least one input, so no feature of the expansion is constant."""
    mask = (torch.rand(shape, generator=generator) < density).to(torch.float32)
    rows = mask.reshape(shape[0], -1)
    dead = (rows.sum(dim=1) == 0).nonzero().flatten()
    if dead.numel():
        picks = torch.randint(rows.shape[1], (dead.numel(),), generator=generator)
        rows[dead, picks] = 1.0
    return rows.reshape(shape)


class _MaskedStack(nn.Module):
    """The shared part of both expanders: weights, their masks (buffers), init and freezing."""

    def __init__(self, spec: LSMSpec, shapes: list[tuple[int, ...]], seed: int) -> None:
        super().__init__()
        self.spec = spec
        generator = torch.Generator().manual_seed(int(seed))
        density = 1.0 - float(spec.sparsity)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for index, shape in enumerate(shapes):
            mask = _draw_mask(shape, density, generator)
            fan_in = max(1.0, float(mask[0].numel()) * density)
            # Variance 1/fan_in over the kept inputs: unit-variance inputs give unit-variance
            # pre-activations whatever the sparsity (the sine's useful range).
            bound = math.sqrt(3.0 / fan_in)
            weight = (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
            bias = (torch.rand(shape[0], generator=generator) * 2.0 - 1.0) * bound
            self.weights.append(nn.Parameter(weight, requires_grad=not spec.freeze))
            self.biases.append(nn.Parameter(bias, requires_grad=not spec.freeze))
            self.register_buffer(f"mask_{index}", mask)

    def masks(self) -> list[torch.Tensor]:
        """The fixed binary masks, one per layer (buffers: saved in weights.pt, never trained)."""
        return [getattr(self, f"mask_{i}") for i in range(len(self.weights))]

    def density(self) -> float:
        """Fraction of weights kept (about 1 - sparsity)."""
        masks = self.masks()
        return float(sum(m.sum() for m in masks) / sum(m.numel() for m in masks))


def _layer_widths(spec: LSMSpec, width_in: int) -> list[int]:
    hidden = spec.hidden_units or spec.width
    return [int(width_in)] + [int(hidden)] * (spec.hidden_layers - 1) + [spec.width]


class LSMExpander(_MaskedStack):
    """Masked linear layers with a fixed nonlinearity: (N, in_features) -> (N, out_features).

    Channels-first tensors (N, C, *) are expanded per position along C (C == in_features).
    """

    def __init__(self, in_features: int, spec: LSMSpec | Mapping[str, Any], *, seed: int = 0) -> None:
        spec = LSMSpec.coerce(spec)
        if spec.kind != "dense":
            raise ValidationError("kind", f"LSMExpander builds kind='dense', got {spec.kind!r} (use LSMConv2dExpander)")
        if not _is_int(in_features) or in_features < 1:
            raise ValidationError.expected("in_features", "an int >= 1", in_features)
        widths = _layer_widths(spec, in_features)
        super().__init__(spec, [(w_out, w_in) for w_in, w_out in zip(widths, widths[1:])], seed)
        self.in_features = int(in_features)
        self.out_features = spec.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.dim() > 2
        if channels_first:
            x = x.movedim(1, -1)
        if x.shape[-1] != self.in_features:
            raise ValidationError(
                "expander",
                f"expected inputs with {self.in_features} features, got shape {tuple(x.shape)}",
            )
        for weight, bias, mask in zip(self.weights, self.biases, self.masks()):
            x = _activation(self.spec.nonlinearity, F.linear(x, weight * mask, bias))
        return x.movedim(-1, 1) if channels_first else x


class LSMConv2dExpander(_MaskedStack):
    """Masked 2-D convolutions ("same" padding): (N, in_channels, H, W) -> (N, out_channels, H, W)."""

    def __init__(self, in_channels: int, spec: LSMSpec | Mapping[str, Any], *, seed: int = 0) -> None:
        spec = LSMSpec.coerce(spec)
        if spec.kind != "conv2d":
            raise ValidationError("kind", f"LSMConv2dExpander builds kind='conv2d', got {spec.kind!r} (use LSMExpander)")
        if not _is_int(in_channels) or in_channels < 1:
            raise ValidationError.expected("in_channels", "an int >= 1", in_channels)
        k = spec.kernel_size
        widths = _layer_widths(spec, in_channels)
        super().__init__(spec, [(w_out, w_in, k, k) for w_in, w_out in zip(widths, widths[1:])], seed)
        self.in_channels = int(in_channels)
        self.out_channels = spec.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValidationError(
                "expander",
                f"kind='conv2d' expects (N, {self.in_channels}, H, W) inputs, got shape {tuple(x.shape)}",
            )
        padding = self.spec.kernel_size // 2
        for weight, bias, mask in zip(self.weights, self.biases, self.masks()):
            x = _activation(self.spec.nonlinearity, F.conv2d(x, weight * mask, bias, padding=padding))
        return x


def build_expander(value: Any, input_dim_or_channels: int, *, seed: int | None = None) -> nn.Module:
    """An expander from a mapping of LSMSpec fields, an LSMSpec, or an nn.Module (returned as it is).

    ``input_dim_or_channels`` is the input width (features for "dense", channels for "conv2d").
    ``seed`` draws masks and weights when the spec's ``random_state`` is None (default 0).
    Errors are ValidationErrors keyed under ``expander`` (``expander.sparsity``).
    """
    if isinstance(value, nn.Module):
        return value
    if not isinstance(value, (LSMSpec, Mapping)):
        raise ValidationTypeError.expected(
            "expander", "None, an LSMSpec, a mapping of its fields or an nn.Module", value
        )
    try:
        spec = LSMSpec.coerce(value)
        seed = spec.random_state if spec.random_state is not None else (0 if seed is None else int(seed))
        if spec.kind == "dense":
            return LSMExpander(int(input_dim_or_channels), spec, seed=seed)
        return LSMConv2dExpander(int(input_dim_or_channels), spec, seed=seed)
    except ValidationError as exc:
        if exc.key == "expander":
            raise
        raise exc.under("expander") from None


def expander_spec(value: Any) -> LSMSpec | None:
    """The LSMSpec behind an expander parameter (None for None or a custom nn.Module)."""
    if value is None:
        return None
    if isinstance(value, (LSMExpander, LSMConv2dExpander)):
        return value.spec
    if isinstance(value, nn.Module):
        return None
    if isinstance(value, (LSMSpec, Mapping)):
        try:
            return LSMSpec.coerce(value)
        except ValidationError as exc:
            raise exc.under("expander") from None
    raise ValidationTypeError(
        "expander", f"expected None, an LSMSpec, a mapping of its fields or an nn.Module, got {short_repr(value)}"
    )
