"""Pieces shared by the PSANN model families: input checks, DropPath, output heads."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "check_features"]


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
