"""Pieces shared by the PSANN model families: input checks, DropPath, the stateful-model mixin."""

from __future__ import annotations

import torch
from torch import nn

from psann.state import StateConfig, StateController

__all__ = ["DropPath", "Stateful", "apply_state", "check_features", "state_controller"]


def state_controller(features: int, state: StateConfig | None, *, feature_dim: int = -1) -> StateController | None:
    """A controller for a sine layer of ``features`` outputs, or None when the network is stateless."""
    return None if state is None else StateController(features, state, feature_dim=feature_dim)


def apply_state(controller: StateController | None, h: torch.Tensor) -> torch.Tensor:
    return h if controller is None else controller(h)


class Stateful:
    """Mixin for networks that may hold StateControllers (built with ``state=StateConfig``).

    ``stateful`` is True when the network has any controller; the training loop then never
    shuffles, resets the state on its cadence (``reset_state``) and calls ``commit_state`` after
    every optimiser step.
    """

    def state_controllers(self) -> list[StateController]:
        return [m for m in self.modules() if isinstance(m, StateController)]  # type: ignore[attr-defined]

    @property
    def stateful(self) -> bool:
        return any(isinstance(m, StateController) for m in self.modules())  # type: ignore[attr-defined]

    def reset_state(self) -> None:
        """Refill every controller's state with its ``init`` value."""
        for controller in self.state_controllers():
            controller.reset_to_init()

    def commit_state(self) -> None:
        """Make every controller's staged state current (after an optimiser step)."""
        for controller in self.state_controllers():
            controller.commit()


def check_features(x: torch.Tensor, expected: int, *, model: str) -> None:
    """Raise a ValueError naming the bad dimension when x is not (N, expected)."""
    if x.dim() != 2:
        raise ValueError(f"{model} expects input of shape (N, {expected}); got rank {x.dim()} shape {tuple(x.shape)}")
    if x.shape[1] != expected:
        raise ValueError(
            f"{model} expects input of shape (N, {expected}); got dim 1 = {x.shape[1]} (shape {tuple(x.shape)})"
        )


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample, in train mode only."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath drop_prob must be in [0, 1). Got {drop_prob!r} instead.")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = torch.empty(mask_shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
