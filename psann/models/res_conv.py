"""ResConv PSANN: a convolutional sine stem, residual blocks of sine convolutions, a pooled or per-position head.

Shapes (channels first): input (N, C, L) or (N, C, H, W) -> output (N, dim_out) with global average
pooling over positions (``preserve_shape=False``), or (N, dim_out, L) / (N, dim_out, H, W) from a 1x1
convolution at every position (``preserve_shape=True``).

Each sine convolution has per-channel amplitude, frequency and decay (the sine activation on the
channel dimension) and SIREN-initialised weights: the stem by the first-layer rule scaled by ``w0``,
the blocks by the hidden rule with ``hidden_w0``. Kernels are odd with "same" padding, so every
layer keeps the positions. A block's residual branch is scaled by ``alpha`` (initially 0), so a fresh
network is its stem followed by the head. With ``state=StateConfig(...)`` a StateController follows
every sine convolution, its state per channel (feature axis 1).
"""

from __future__ import annotations

import torch
from torch import nn

from psann.activations import SineActivation, SineConfig, W0Scale, siren_init_
from psann.models._common import Stateful, apply_state, state_controller
from psann.state import StateConfig

__all__ = ["ResConvPSANNNet", "SineConv", "SineConvBlock"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}


class SineConv(W0Scale):
    """``sine(w0 * conv(x))`` with "same" padding and per-channel sine parameters (w0 as in SineLayer)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_dims: int,
        kernel_size: int = 3,
        w0: float = 1.0,
        is_first: bool = False,
        sine: SineConfig | None = None,
    ) -> None:
        super().__init__()
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self._init_w0(w0)
        self.is_first = is_first
        siren_init_(self.conv, w0=float(w0), is_first=is_first)
        self.activation = SineActivation(out_channels, sine, feature_dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x), self._w0_or_none())

    def extra_repr(self) -> str:
        return f"w0={self.w0}, is_first={self.is_first}"


class SineConvBlock(nn.Module):
    """x + alpha * sineconv(sineconv(x))."""

    def __init__(
        self,
        channels: int,
        *,
        spatial_dims: int,
        kernel_size: int,
        w0: float,
        sine: SineConfig | None,
        state: StateConfig | None = None,
    ):
        super().__init__()
        kwargs = dict(spatial_dims=spatial_dims, kernel_size=kernel_size, w0=w0, sine=sine)
        self.first = SineConv(channels, channels, **kwargs)
        self.first_state = state_controller(channels, state, feature_dim=1)
        self.second = SineConv(channels, channels, **kwargs)
        self.second_state = state_controller(channels, state, feature_dim=1)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = apply_state(self.first_state, self.first(x))
        return x + self.alpha * apply_state(self.second_state, self.second(h))


class ResConvPSANNNet(Stateful, nn.Module):
    """Sine-conv stem, ``depth`` residual sine-conv blocks, pooled linear or per-position 1x1 head."""

    def __init__(
        self,
        in_channels: int,
        dim_out: int,
        *,
        spatial_dims: int = 1,
        conv_channels: int = 32,
        depth: int = 3,
        kernel_size: int = 3,
        w0: float = 30.0,
        hidden_w0: float = 1.0,
        preserve_shape: bool = False,
        sine: SineConfig | None = None,
        state: StateConfig | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"ResConvPSANNNet supports 1 or 2 spatial dims. Got {spatial_dims!r} instead.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ResConvPSANNNet needs an odd kernel_size >= 1. Got {kernel_size!r} instead.")
        if depth < 0:
            raise ValueError(f"ResConvPSANNNet needs depth >= 0. Got {depth!r} instead.")
        self.dim_in = in_channels
        self.dim_out = dim_out
        self.spatial_dims = spatial_dims
        self.preserve_shape = preserve_shape
        self.stem = SineConv(
            in_channels, conv_channels, spatial_dims=spatial_dims, kernel_size=kernel_size, w0=w0, is_first=True, sine=sine
        )
        self.stem_state = state_controller(conv_channels, state, feature_dim=1)
        self.blocks = nn.ModuleList(
            SineConvBlock(conv_channels, spatial_dims=spatial_dims, kernel_size=kernel_size, w0=hidden_w0, sine=sine, state=state)
            for _ in range(depth)
        )
        self.head = _CONV[spatial_dims](conv_channels, dim_out, 1) if preserve_shape else nn.Linear(conv_channels, dim_out)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.dim_in:
            layout = "(N, C, L)" if self.spatial_dims == 1 else "(N, C, H, W)"
            raise ValueError(
                f"ResConvPSANNNet expects input {layout} with C={self.dim_in}; got shape {tuple(x.shape)}"
            )
        h = apply_state(self.stem_state, self.stem(x))
        for block in self.blocks:
            h = block(h)
        if self.preserve_shape:
            return self.head(h)
        return self.head(h.mean(dim=tuple(range(2, h.dim()))))
