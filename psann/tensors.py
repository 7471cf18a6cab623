"""Arrays and tensors to float32 tensors on a device: the one converter estimators and HISSO share.

A torch tensor already on the device in float32 is returned as it is (device data is never copied
to the host); anything else is converted once. Non-numeric, complex, empty and non-finite inputs are
refused with the name and shape in the message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from psann.errors import ValidationError

__all__ = ["as_float_tensor", "check_finite"]


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise ValidationError(name) when ``tensor`` holds NaN or inf (one host read of a flag)."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        first = tuple(int(i) for i in (~finite).nonzero()[0].tolist())
        raise ValidationError(name, f"contains NaN or inf (first at index {first}, shape {tuple(tensor.shape)})")


def as_float_tensor(data: Any, name: str, device: torch.device, *, min_dim: int = 1) -> torch.Tensor:
    """``data`` as a finite float32 tensor on ``device`` with at least ``min_dim`` dims and one row.

    Example::

        prices = as_float_tensor(prices_np, "context", torch.device("cpu"))
    """
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise ValidationError(name, f"expected a real-valued tensor, got dtype {data.dtype}")
        tensor = data if (data.dtype == torch.float32 and data.device == device) else data.to(device, torch.float32)
    else:
        array = np.asarray(data)
        if array.dtype.kind not in "biuf":
            raise ValidationError(name, f"expected a real numeric array, got dtype {array.dtype}")
        # np.array copies, so read-only or memory-mapped inputs never reach torch.as_tensor.
        tensor = torch.as_tensor(np.array(array, dtype=np.float32), device=device)
    if tensor.dim() < min_dim:
        raise ValidationError(name, f"expected at least {min_dim} dimension(s), got shape {tuple(tensor.shape)}")
    if tensor.dim() and tensor.shape[0] == 0:
        raise ValidationError(name, f"is empty (shape {tuple(tensor.shape)})")
    check_finite(tensor, name)
    return tensor
