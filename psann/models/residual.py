"""Residual PSANN: a sine stem, residual blocks of two sine layers with DropPath, a linear head.

Shapes: input (N, dim_in) -> output (N, dim_out). DropPath is active only in train mode. With
``state=StateConfig(...)`` a StateController follows every sine layer (stem and both block layers).
"""

from __future__ import annotations

import torch
from torch import nn

from psann.activations import SineConfig, SineLayer
from psann.models._common import DropPath, Stateful, apply_state, check_features, state_controller
from psann.state import StateConfig

__all__ = ["ResPSANNNet", "SineResidualBlock"]


class SineResidualBlock(nn.Module):
    """x + DropPath(sine(W2 sine(W1 x))), each sine optionally followed by a state gain."""

    def __init__(
        self,
        units: int,
        *,
        w0: float = 1.0,
        drop_path: float = 0.0,
        sine: SineConfig | None = None,
        state: StateConfig | None = None,
    ):
        super().__init__()
        self.first = SineLayer(units, units, w0=w0, sine=sine)
        self.first_state = state_controller(units, state)
        self.second = SineLayer(units, units, w0=w0, sine=sine)
        self.second_state = state_controller(units, state)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = apply_state(self.first_state, self.first(x))
        return x + self.drop_path(apply_state(self.second_state, self.second(h)))


class ResPSANNNet(Stateful, nn.Module):
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
        state: StateConfig | None = None,
    ) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"ResPSANNNet needs hidden_layers >= 1. Got {hidden_layers!r} instead.")
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.stem = SineLayer(dim_in, hidden_units, w0=w0, is_first=True, sine=sine)
        self.stem_state = state_controller(hidden_units, state)
        # Linearly increasing drop rates, the usual stochastic-depth schedule.
        rates = [drop_path * (i + 1) / hidden_layers for i in range(hidden_layers)]
        self.blocks = nn.ModuleList(
            SineResidualBlock(hidden_units, w0=hidden_w0, drop_path=rate, sine=sine, state=state) for rate in rates
        )
        self.head = nn.Linear(hidden_units, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.dim_in, model=type(self).__name__)
        h = apply_state(self.stem_state, self.stem(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h)
