"""WaveResNet: a sine stem, residual sine blocks with FiLM context and phase shift, a linear head.

Shapes: input (N, dim_in), optional context (N, context_dim) -> output (N, dim_out).

Every residual branch is scaled by a learnable ``alpha`` that starts at 0.0, so a fresh network (and
a block added later by ``add_blocks``) starts as the identity around its stem. FiLM modulation starts
at scale 1 and shift 0, and the phase shift at 0, so they also start as identities. With
``state=StateConfig(...)`` a StateController follows every sine (the stem, and both sines of each
block, blocks added by ``add_blocks`` included).
"""

from __future__ import annotations

import torch
from torch import nn

from psann.activations import SineActivation, SineConfig, SineLayer, siren_init_
from psann.models._common import Stateful, apply_state, check_features, state_controller
from psann.state import StateConfig

__all__ = ["WaveResNet", "WaveBlock"]


class WaveBlock(nn.Module):
    """x + alpha * sine(W2 dropout(sine(FiLM(W1 x) + phase)))."""

    def __init__(
        self,
        units: int,
        *,
        w0: float = 1.0,
        context_dim: int = 0,
        phase_shift: bool = True,
        dropout: float = 0.0,
        sine: SineConfig | None = None,
        state: StateConfig | None = None,
    ) -> None:
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(units, units)
        siren_init_(self.linear, w0=self.w0, is_first=False)
        self.activation = SineActivation(units, sine)
        self.activation_state = state_controller(units, state)
        self.film_scale = nn.Linear(context_dim, units) if context_dim else None
        self.film_shift = nn.Linear(context_dim, units) if context_dim else None
        for layer in (self.film_scale, self.film_shift):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.phase = nn.Parameter(torch.zeros(units)) if phase_shift else None
        self.dropout = nn.Dropout(dropout)
        self.out = SineLayer(units, units, w0=w0, sine=sine)
        self.out_state = state_controller(units, state)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(x)
        if self.w0 != 1.0:  # hidden_w0 defaults to 1: skip a full-size multiply that changes nothing
            h = self.w0 * h
        if self.film_scale is not None:
            if context is None:
                raise ValueError("WaveBlock was built with context_dim > 0 but no context was given")
            h = (1.0 + self.film_scale(context)) * h + self.film_shift(context)
        if self.phase is not None:
            h = h + self.phase
        h = apply_state(self.activation_state, self.activation(h))
        h = apply_state(self.out_state, self.out(self.dropout(h)))
        return x + self.alpha * h


class WaveResNet(Stateful, nn.Module):
    """Stem (linear scaled by first_layer_w0, then sine), ``depth`` WaveBlocks, linear head."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        hidden_units: int = 64,
        depth: int = 4,
        first_layer_w0: float = 30.0,
        hidden_w0: float = 1.0,
        context_dim: int = 0,
        phase_shift: bool = True,
        dropout: float = 0.0,
        sine: SineConfig | None = None,
        state: StateConfig | None = None,
    ) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"WaveResNet needs depth >= 0. Got {depth!r} instead.")
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.context_dim = context_dim
        self._block_kwargs = dict(
            w0=hidden_w0, context_dim=context_dim, phase_shift=phase_shift, dropout=dropout, sine=sine, state=state
        )
        self.hidden_units = hidden_units
        self.stem = SineLayer(dim_in, hidden_units, w0=first_layer_w0, is_first=True, sine=sine)
        self.stem_state = state_controller(hidden_units, state)
        self.blocks = nn.ModuleList(WaveBlock(hidden_units, **self._block_kwargs) for _ in range(depth))
        self.head = nn.Linear(hidden_units, dim_out)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def first_layer_w0(self) -> float:
        return self.stem.w0

    def set_first_layer_w0(self, w0: float) -> None:
        """Change the stem's w0 (used by the w0 warm-up schedule)."""
        if w0 <= 0:
            raise ValueError(f"first_layer_w0 must be > 0. Got {w0!r} instead.")
        self.stem.w0 = float(w0)

    def add_blocks(self, n: int) -> list[nn.Parameter]:
        """Append n blocks (alpha = 0, so outputs are unchanged); returns their parameters."""
        if n < 0:
            raise ValueError(f"add_blocks needs n >= 0. Got {n!r} instead.")
        reference = self.head.weight
        new_params: list[nn.Parameter] = []
        for _ in range(n):
            block = WaveBlock(self.hidden_units, **self._block_kwargs).to(
                device=reference.device, dtype=reference.dtype
            )
            self.blocks.append(block)
            new_params.extend(block.parameters())
        return new_params

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        check_features(x, self.dim_in, model=type(self).__name__)
        if self.context_dim:
            if context is None or context.dim() != 2 or context.shape != (x.shape[0], self.context_dim):
                got = None if context is None else tuple(context.shape)
                raise ValueError(
                    f"WaveResNet expects context of shape ({x.shape[0]}, {self.context_dim}); got {got}"
                )
        h = apply_state(self.stem_state, self.stem(x))
        for block in self.blocks:
            h = block(h, context)
        return self.head(h)
