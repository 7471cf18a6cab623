"""Dense PSANN: ``hidden_layers`` sine layers of ``hidden_units`` neurons and a linear head.

Shapes: input (N, dim_in) -> output (N, dim_out). With ``state=StateConfig(...)`` a StateController
follows every sine layer (see psann/state.py and docs/stateful.md).
"""

from __future__ import annotations

import torch
from torch import nn

from psann.activations import SineConfig, SineLayer
from psann.models._common import Stateful, check_features, state_controller
from psann.state import StateConfig

__all__ = ["PSANNNet"]


class PSANNNet(Stateful, nn.Module):
    """Linear -> sine (-> state gain), repeated ``hidden_layers`` times, then a linear head.

    The first layer uses the SIREN first-layer rule scaled by ``w0``; hidden layers use ``hidden_w0``.
    """

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        hidden_layers: int = 2,
        hidden_units: int = 64,
        w0: float = 30.0,
        hidden_w0: float = 1.0,
        sine: SineConfig | None = None,
        state: StateConfig | None = None,
    ) -> None:
        super().__init__()
        if hidden_layers < 1:
            raise ValueError(f"PSANNNet needs hidden_layers >= 1. Got {hidden_layers!r} instead.")
        self.dim_in = dim_in
        self.dim_out = dim_out
        layers = [SineLayer(dim_in, hidden_units, w0=w0, is_first=True, sine=sine)]
        layers += [
            SineLayer(hidden_units, hidden_units, w0=hidden_w0, sine=sine) for _ in range(hidden_layers - 1)
        ]
        self.body = nn.Sequential(*layers)
        # Kept beside the body (not inside it), so a stateless network's state_dict keys are unchanged.
        self.states = nn.ModuleList(state_controller(hidden_units, state) for _ in layers) if state else None
        self.head = nn.Linear(hidden_units, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_features(x, self.dim_in, model=type(self).__name__)
        if self.states is None:
            return self.head(self.body(x))
        h = x
        for layer, controller in zip(self.body, self.states):
            h = controller(layer(h))
        return self.head(h)
