"""Sample layouts: channels-first (N, C, *) and channels-last (N, *, C) inputs and targets.

A 2-D input (N, F) has no layout. Every N-D input is moved to channels-first before anything else,
so a model sees the same feature order whichever ``data_format`` the caller uses.
"""

from __future__ import annotations

import torch

from psann.errors import ValidationError

__all__ = ["check_per_position_targets", "from_channels_first", "spatial_shape", "to_channels_first"]


def to_channels_first(X: torch.Tensor, data_format: str) -> torch.Tensor:
    """(N, *, C) -> (N, C, *) for channels_last; channels-first and 2-D inputs are returned as they are."""
    if X.dim() > 2 and data_format == "channels_last":
        return X.movedim(-1, 1)
    return X


def from_channels_first(out: torch.Tensor, data_format: str) -> torch.Tensor:
    """Inverse of ``to_channels_first`` for per-position outputs (N, out, *)."""
    if out.dim() > 2 and data_format == "channels_last":
        return out.movedim(1, -1)
    return out


def spatial_shape(X: torch.Tensor, data_format: str) -> tuple[int, ...]:
    """The positions of an N-D input: (L,) or (H, W); () for a 2-D input."""
    if X.dim() <= 2:
        return ()
    return tuple(int(s) for s in (X.shape[2:] if data_format == "channels_first" else X.shape[1:-1]))


def check_per_position_targets(y: torch.Tensor, positions: tuple[int, ...], data_format: str) -> torch.Tensor:
    """Per-position targets in the caller's layout, returned channels-first (N, out, *positions)."""
    dims = ", ".join(map(str, positions))
    if data_format == "channels_first":
        ok = y.dim() == len(positions) + 2 and tuple(y.shape[2:]) == tuple(positions)
        expected = f"(N, out, {dims})"
    else:
        ok = y.dim() == len(positions) + 2 and tuple(y.shape[1:-1]) == tuple(positions)
        expected = f"(N, {dims}, out)"
    if not ok:
        raise ValidationError(
            "y", f"with preserve_shape=True and {data_format}, expected targets of shape {expected}, got {tuple(y.shape)}"
        )
    return y.movedim(-1, 1) if data_format == "channels_last" else y
