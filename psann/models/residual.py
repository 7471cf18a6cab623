"""Residual PSANN: a sine stem, residual blocks of two sine layers with DropPath, a linear head.

Shapes: input (N, dim_in) -> output (N, dim_out). DropPath is active only in train mode.
"""

from __future__ import annotations

import torch
from torch import nn

from psann.activations import SineConfig, SineLayer
from psann.models._common import DropPath, check_features

__all__ = ["ResPSANNNet", "SineResidualBlock"]


class SineResidualBlock(nn.Module):
    """x + DropPath(sine(W2 sine(W1 x)))."""

    def __init__(self, units: int, *, w0: float = 1.0, drop_path: float = 0.0, sine: SineConfig | None = None):
        super().__init__()
        self.first = SineLayer(units, units, w0=w0, sine=sine)
        self.second = SineLayer(units, units, w0=w0, sine=sine)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.second(self.first(x)))


class ResPSANNNet(nn.Module):
    """Sine stem, ``hidden_layers`` residual sine blocks, linear head."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        hidden_layers: int = 2,
        hidden_units: int = 64,
        w0: float = 30.0,
        hidden_w0: float = 1.0,
        drop_path: float = 0.0,
        sine: SineConfig | None = None,
    ) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"ResPSANNNet needs hidden_layers >= 1. Got {hidden_layers!r} instead.")
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.stem = SineLayer(dim_in, hidden_units, w0=w0, is_first=True, sine=sine)
        # Linearly increasing drop rates, the usual stochastic-depth schedule.
        rates = [drop_path * (i + 1) / hidden_layers for i in range(hidden_layers)]
        self.blocks = nn.ModuleList(
            SineResidualBlock(hidden_units, w0=hidden_w0, drop_path=rate, sine=sine) for rate in rates
        )
        self.head = nn.Linear(hidden_units, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.dim_in, model=type(self).__name__)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)
