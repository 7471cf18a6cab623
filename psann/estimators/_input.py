"""Input validation for the estimators: numpy through scikit-learn, torch tensors by shape and dtype.

Numpy-like input (lists, arrays, DataFrames, memory maps) goes through sklearn's ``validate_data``
with ``allow_nd=True``, so sklearn's messages, ``n_features_in_`` (``X.shape[1]``, as sklearn defines
it) and ``feature_names_in_`` follow its rules. A torch tensor (CPU or CUDA) bypasses ``check_array``
and is checked by shape and dtype where it lies, so device data is never copied to the host. Either
way the full sample shape is recorded beside ``n_features_in_`` as ``input_shape_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils import check_array
from sklearn.utils.validation import validate_data

from psann.errors import ValidationError
from psann.text import SineTokenEmbedder
from psann.tensors import check_finite

__all__ = ["validate_X", "validate_y"]


def _tensor_X(est: Any, X: torch.Tensor, *, reset: bool, name: str, device: torch.device) -> torch.Tensor:
    if X.is_complex() or X.dtype == torch.bool:
        raise ValidationError(name, f"expected a real-valued tensor, got dtype {X.dtype}")
    if X.dim() < 2:
        raise ValidationError(
            name,
            f"expected a 2D (n_samples, n_features) or N-D (n_samples, C, ...) tensor, got shape {tuple(X.shape)}; "
            "reshape a single feature with X.reshape(-1, 1)",
        )
    if X.shape[0] == 0 or X[0].numel() == 0:
        raise ValidationError(name, f"expected at least 1 sample and 1 feature, got shape {tuple(X.shape)}")
    if not reset:
        if int(X.shape[1]) != est.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(est).__name__} is expecting {est.n_features_in_} "
                "features as input."
            )
    else:
        est.n_features_in_ = int(X.shape[1])
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    tensor = X if (X.dtype == torch.float32 and X.device == device) else X.to(device, torch.float32)
    check_finite(tensor, name)
    return tensor


def _token_ids(est: Any, X: Any, *, name: str, device: torch.device) -> torch.Tensor:
    """Integer token ids (N, L) as a float32 tensor (exact below 2**24) after the embedder's checks."""
    embedder = SineTokenEmbedder.coerce(est.embedder)
    if isinstance(X, torch.Tensor):
        if X.is_floating_point() or X.is_complex() or X.dtype == torch.bool:
            raise ValidationError(
                name, f"with an embedder, expected integer token ids (N, L), got a tensor of dtype {X.dtype}"
            )
        ids = X.to(device)
    else:
        array = np.asarray(X)
        if array.dtype.kind not in "iu":
            raise ValidationError(
                name,
                f"with an embedder, expected integer token ids (N, L) (e.g. SimpleWordTokenizer.encode_batch), "
                f"got an array of dtype {array.dtype} and shape {array.shape}",
            )
        ids = torch.as_tensor(np.array(array, dtype=np.int64, copy=True), device=device)
    embedder.check_ids(ids, name)
    return ids.to(torch.float32)


def validate_X(est: Any, X: Any, *, reset: bool, device: torch.device, name: str = "X") -> torch.Tensor:
    """``X`` as a float32 tensor on ``device``; with ``reset`` records n_features_in_ and input_shape_.

    Without ``reset`` the sample shape must equal the one seen in fit; the error shows both. With an
    ``embedder`` X holds integer token ids (N, L), returned as a one-channel sequence in the
    estimator's layout ((N, 1, L) channels first, (N, L, 1) channels last), never standardised.
    """
    if getattr(est, "embedder", None) is not None:
        ids = _token_ids(est, X, name=name, device=device)
        length = int(ids.shape[1])
        if reset:
            est.n_features_in_, est.input_shape_ = length, (length,)
            if hasattr(est, "feature_names_in_"):
                del est.feature_names_in_
        elif (length,) != tuple(est.input_shape_):
            raise ValidationError(
                name, f"expected token ids of length {est.input_shape_[0]} (as in fit), got shape {tuple(ids.shape)}"
            )
        return ids.unsqueeze(-1) if getattr(est, "data_format", "channels_first") == "channels_last" else ids.unsqueeze(1)
    if isinstance(X, torch.Tensor):
        tensor = _tensor_X(est, X, reset=reset, name=name, device=device)
    else:
        array = validate_data(est, X, reset=reset, allow_nd=True, dtype=np.float32, ensure_min_features=1)
        # np.array copies: a read-only or memory-mapped input never reaches torch (which warns on it).
        tensor = torch.as_tensor(np.array(array, dtype=np.float32, copy=True), device=device)
    sample_shape = tuple(int(s) for s in tensor.shape[1:])
    if reset:
        est.input_shape_ = sample_shape
    elif sample_shape != tuple(est.input_shape_):
        raise ValidationError(
            name,
            f"expected samples of shape {tuple(est.input_shape_)} (as in fit), got {sample_shape} "
            f"(X shape {tuple(tensor.shape)})",
        )
    return tensor


def validate_y(y: Any, n_samples: int, *, device: torch.device, name: str = "y") -> tuple[torch.Tensor, bool]:
    """Targets as a float32 tensor on ``device`` and whether they were 1-D (now one column)."""
    if isinstance(y, torch.Tensor):
        if y.is_complex() or y.dtype == torch.bool:
            raise ValidationError(name, f"expected a real-valued tensor, got dtype {y.dtype}")
        tensor = y if (y.dtype == torch.float32 and y.device == device) else y.to(device, torch.float32)
        if tensor.dim() == 0:
            raise ValidationError(name, "expected one target row per sample, got a scalar")
        check_finite(tensor, name)
    else:
        array = check_array(y, ensure_2d=False, allow_nd=True, dtype=np.float32, input_name=name)
        tensor = torch.as_tensor(np.array(array, dtype=np.float32, copy=True), device=device)
    was_1d = tensor.dim() == 1
    if was_1d:
        tensor = tensor.unsqueeze(1)
    if tensor.shape[0] != n_samples:
        raise ValidationError(
            name,
            f"expected {n_samples} rows (one per sample of X), got shape {tuple(tensor.shape)}",
        )
    return tensor, was_1d
