"""ResConvPSANNRegressor: residual sine convolutions over (N, C, L) or (N, C, H, W) samples."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from psann.errors import ValidationError
from psann.estimators._base import BasePSANNEstimator
from psann.estimators._streaming import StreamingMixin
from psann.estimators._layout import check_per_position_targets, from_channels_first, to_channels_first
from psann.estimators._params import DEPRECATED, Int, Real
from psann.estimators._shared import TRAINING_CONSTRAINTS, sine_config
from psann.models import ResConvPSANNNet

__all__ = ["ResConvPSANNRegressor"]


class ResConvPSANNRegressor(StreamingMixin, BasePSANNEstimator):
    """Convolutional sine network regressor: a sine-conv stem and ``depth`` residual sine-conv blocks.

    Samples are (C, L) sequences or (C, H, W) images, channels first or last per ``data_format``; a
    2-D input (N, F) is read as one channel, (N, 1, F). With ``preserve_shape=False`` positions are
    averaged (global average pooling) before a linear head, so y is (N, k); with
    ``preserve_shape=True`` a 1x1 convolution gives every position its outputs, so y is
    (N, k, L) / (N, k, H, W) (or channels last). Kernels are odd with "same" padding.

    With ``state`` (a ``psann.StateConfig`` or a mapping of its fields) the network is stateful: a
    StateController follows every sine layer, rows are never shuffled, the state is reset per
    ``state_reset`` ("batch", "epoch" or "none"), and ``predict_sequence``,
    ``predict_sequence_online`` and ``step`` (at ``stream_lr``) carry it (docs/stateful.md).

    Example::

        X = np.random.default_rng(0).normal(size=(256, 4, 32)).astype(np.float32)
        est = ResConvPSANNRegressor(epochs=50, random_state=0).fit(X, X.mean(axis=(1, 2)))
    """

    _parameter_constraints = {
        **TRAINING_CONSTRAINTS,
        "conv_channels": Int(1),
        "depth": Int(0),
        "kernel_size": Int(1),
        "w0": Real(0.0, low_open=True),
    }
    # The earlier psann CLI's names for the conv width and depth.
    _deprecated_params = {"hidden_channels": "conv_channels", "hidden_layers": "depth"}
    _supports_preserve_shape = True

    def __init__(
        self,
        *,
        conv_channels: int = 32,
        depth: int = 3,
        kernel_size: int = 3,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_epochs: float = 0.0,
        early_stopping: bool = False,
        patience: int = 20,
        grad_clip: float | None = None,
        random_state: int | None = None,
        device: str | torch.device = "auto",
        w0: float = 30.0,
        hidden_w0: float = 1.0,
        amplitude_init: float = 1.0,
        frequency_init: float = 1.0,
        decay_init: float = 0.1,
        decay_mode: str = "abs",
        learnable: Any = "all",
        activation_bounds: Any = None,
        preserve_shape: bool = False,
        data_format: str = "channels_first",
        standardize: bool = True,
        verbose: int = 0,
        mixed_precision: bool = False,
        amp_dtype: str = "float16",
        compile: bool = False,
        state: Any = None,
        state_reset: str = "epoch",
        stream_lr: float | None = None,
        expander: Any = None,
        lsm_lr: float | None = None,
        embedder: Any = None,
        hidden_channels: Any = DEPRECATED,
        hidden_layers: Any = DEPRECATED,
    ) -> None:
        self.conv_channels = conv_channels
        self.depth = depth
        self.kernel_size = kernel_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.warmup_epochs = warmup_epochs
        self.early_stopping = early_stopping
        self.patience = patience
        self.grad_clip = grad_clip
        self.random_state = random_state
        self.device = device
        self.w0 = w0
        self.hidden_w0 = hidden_w0
        self.amplitude_init = amplitude_init
        self.frequency_init = frequency_init
        self.decay_init = decay_init
        self.decay_mode = decay_mode
        self.learnable = learnable
        self.activation_bounds = activation_bounds
        self.preserve_shape = preserve_shape
        self.data_format = data_format
        self.standardize = standardize
        self.verbose = verbose
        self.mixed_precision = mixed_precision
        self.amp_dtype = amp_dtype
        self.compile = compile
        self.state = state
        self.state_reset = state_reset
        self.stream_lr = stream_lr
        self.expander = expander
        self.lsm_lr = lsm_lr
        self.embedder = embedder
        self.hidden_channels = hidden_channels
        self.hidden_layers = hidden_layers

    def validate_params(self) -> None:
        super().validate_params()
        if self.kernel_size % 2 == 0:
            raise ValidationError(
                "kernel_size", f"{type(self).__name__} expects an odd int (\"same\" padding), got {self.kernel_size!r}"
            )

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        p = self.canonical_params()
        return ResConvPSANNNet(
            dim_in,
            dim_out,
            spatial_dims=max(1, len(self.input_shape_) - 1),  # (F,) and (C, L) -> 1-D, (C, H, W) -> 2-D
            conv_channels=p["conv_channels"],
            depth=p["depth"],
            kernel_size=p["kernel_size"],
            w0=p["w0"],
            hidden_w0=p["hidden_w0"],
            preserve_shape=p["preserve_shape"],
            sine=sine_config(self),
            state=self.state_config(),
        )

    # -- shaped inputs --------------------------------------------------------------------------
    def _prepare_X(self, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2:
            return X.unsqueeze(1)
        if X.dim() > 4:
            raise ValidationError("X", f"expected (N, C, L) or (N, C, H, W) samples, got shape {tuple(X.shape)}")
        return to_channels_first(X, self.data_format)

    def _input_stats(self, X_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Per channel, over samples and positions: shapes (C, 1) or (C, 1, 1) broadcast over (N, C, *).
        dims = [0, *range(2, X_rows.dim())]
        mean = X_rows.mean(dim=dims, keepdim=True)[0]
        std = X_rows.std(dim=dims, unbiased=False, keepdim=True)[0].clamp_min(1e-6)
        return mean, std

    def _prepare_y(self, y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if not self.preserve_shape:
            return super()._prepare_y(y, X)
        positions = tuple(int(s) for s in self._prepare_X(X).shape[2:])
        return check_per_position_targets(y, positions, self.data_format)

    def _restore_output(self, out: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return from_channels_first(out, self.data_format) if self.preserve_shape else out
