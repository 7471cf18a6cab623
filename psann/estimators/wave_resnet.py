"""WaveResNetRegressor: the WaveResNet family behind scikit-learn's estimator base."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from psann._imports import import_callable, import_path_of
from psann.errors import ValidationError
from psann.estimators._base import BasePSANNEstimator
from psann.estimators._streaming import StreamingMixin
from psann.estimators._layout import check_per_position_targets, from_channels_first, spatial_shape, to_channels_first
from psann.estimators._params import DEPRECATED, Anything, Bool, Int, NoneOr, Real
from psann.estimators._shared import TRAINING_CONSTRAINTS, sine_config
from psann.models import WaveResNet
from psann.schedules import ProgressiveDepth, W0Warmup
from psann.tensors import as_float_tensor
from psann.training import Callback

__all__ = ["WaveResNetRegressor"]


class WaveResNetRegressor(StreamingMixin, BasePSANNEstimator):
    """WaveResNet regressor with w0 warm-up, progressive depth and FiLM conditioning.

    Inputs are (N, F) rows, or (N, C, *) / (N, *, C) arrays (``data_format`` says where the
    channels are): with ``preserve_shape=True`` every position is mapped to an output vector, with
    ``preserve_shape=False`` (the default) a sample's values are flattened channels-first into
    features. With ``context_dim > 0`` each sample carries conditioning (N, context_dim) for the
    blocks' FiLM layers: passed as ``conditioning=`` to fit and predict, or computed from X by
    ``conditioning_builder`` (a callable or an import path, saved with the model by path).

    With ``state`` (a ``psann.StateConfig`` or a mapping of its fields) the network is stateful: a
    StateController follows every sine layer, rows are never shuffled, the state is reset per
    ``state_reset`` ("batch", "epoch" or "none"), and ``predict_sequence``,
    ``predict_sequence_online`` and ``step`` (at ``stream_lr``) carry it (docs/stateful.md).
    """

    _parameter_constraints = {
        **TRAINING_CONSTRAINTS,
        "hidden_units": Int(1),
        "depth": Int(0),
        "first_layer_w0": Real(0.0, low_open=True),
        "context_dim": Int(0),
        "phase_shift": Bool(),
        "dropout": Real(0.0, 0.99),
        "w0_warmup_epochs": Int(0),
        "progressive_depth_initial": NoneOr(Int(0)),
        "progressive_depth_interval": NoneOr(Int(1)),
        "conditioning_builder": Anything("None, a callable or an import path 'package.module:function'"),
    }
    # The earlier psann CLI called WaveResNet's depth hidden_layers.
    _deprecated_params = {"hidden_width": "hidden_units", "hidden_layers": "depth"}
    _supports_preserve_shape = True

    def __init__(
        self,
        *,
        hidden_units: int = 64,
        depth: int = 4,
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
        first_layer_w0: float = 30.0,
        hidden_w0: float = 1.0,
        context_dim: int = 0,
        phase_shift: bool = True,
        dropout: float = 0.0,
        w0_warmup_epochs: int = 0,
        progressive_depth_initial: int | None = None,
        progressive_depth_interval: int | None = None,
        preserve_shape: bool = False,
        data_format: str = "channels_first",
        amplitude_init: float = 1.0,
        frequency_init: float = 1.0,
        decay_init: float = 0.1,
        decay_mode: str = "abs",
        learnable: Any = "all",
        activation_bounds: Any = None,
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
        conditioning_builder: Any = None,
        hidden_width: Any = DEPRECATED,
        hidden_layers: Any = DEPRECATED,
    ) -> None:
        self.hidden_units = hidden_units
        self.depth = depth
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
        self.first_layer_w0 = first_layer_w0
        self.hidden_w0 = hidden_w0
        self.context_dim = context_dim
        self.phase_shift = phase_shift
        self.dropout = dropout
        self.w0_warmup_epochs = w0_warmup_epochs
        self.progressive_depth_initial = progressive_depth_initial
        self.progressive_depth_interval = progressive_depth_interval
        self.preserve_shape = preserve_shape
        self.data_format = data_format
        self.amplitude_init = amplitude_init
        self.frequency_init = frequency_init
        self.decay_init = decay_init
        self.decay_mode = decay_mode
        self.learnable = learnable
        self.activation_bounds = activation_bounds
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
        self.conditioning_builder = conditioning_builder
        self.hidden_width = hidden_width
        self.hidden_layers = hidden_layers

    def validate_params(self) -> None:
        super().validate_params()
        owner = type(self).__name__
        p = self.canonical_params()
        initial = p["progressive_depth_initial"]
        if initial is not None and initial > p["depth"]:
            raise ValidationError(
                "progressive_depth_initial", f"{owner} expects a value <= depth ({p['depth']}), got {initial!r}"
            )
        if initial is not None and p["progressive_depth_interval"] is None:
            raise ValidationError(
                "progressive_depth_interval", f"{owner} needs it set when progressive_depth_initial is, got None"
            )
        builder = p["conditioning_builder"]
        if builder is not None and not p["context_dim"]:
            raise ValidationError("conditioning_builder", f"{owner} needs context_dim > 0 to use conditioning, got context_dim=0")
        if builder is not None and not callable(builder):
            import_callable(builder, "conditioning_builder")

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        p = self.canonical_params()
        initial_depth = p["depth"] if p["progressive_depth_initial"] is None else p["progressive_depth_initial"]
        return WaveResNet(
            dim_in,
            dim_out,
            hidden_units=p["hidden_units"],
            depth=initial_depth,
            first_layer_w0=p["first_layer_w0"],
            hidden_w0=p["hidden_w0"],
            context_dim=p["context_dim"],
            phase_shift=p["phase_shift"],
            dropout=p["dropout"],
            sine=sine_config(self),
            state=self.state_config(),
        )

    def _fit_callbacks(self) -> list[Callback]:
        p = self.canonical_params()
        callbacks: list[Callback] = []
        if p["w0_warmup_epochs"]:
            callbacks.append(W0Warmup(p["first_layer_w0"], p["w0_warmup_epochs"]))
        if p["progressive_depth_initial"] is not None:
            callbacks.append(ProgressiveDepth(p["depth"], int(p["progressive_depth_interval"])))
        return callbacks

    # -- conditioning ---------------------------------------------------------------------------
    def _resolved_builder(self) -> Callable[[Any], Any] | None:
        builder = self.conditioning_builder
        if builder is None or callable(builder):
            return builder
        return import_callable(builder, "conditioning_builder")

    def _conditioning_rows(self, conditioning: Any, X: Any, X_t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        k = self.context_dim
        if not k:
            return super()._conditioning_rows(conditioning, X, X_t, rows)
        if conditioning is None:
            # Resolved once per fit (or load) and kept, so predict never re-imports the builder.
            builder = getattr(self, "conditioning_builder_", None) or self._resolved_builder()
            if builder is None:
                raise ValidationError(
                    "conditioning",
                    f"{type(self).__name__}(context_dim={k}) needs conditioning of shape (N, {k}) "
                    "or a conditioning_builder",
                )
            conditioning = builder(X)
        cond = as_float_tensor(conditioning, "conditioning", rows.device)
        if cond.dim() == 1 and k == 1:
            cond = cond.unsqueeze(1)
        n = X_t.shape[0]
        if tuple(cond.shape) != (n, k):
            raise ValidationError("conditioning", f"expected shape ({n}, {k}) (one row per sample), got {tuple(cond.shape)}")
        if rows.shape[0] != n:  # preserve_shape: one row per position, sample-major
            cond = cond.repeat_interleave(rows.shape[0] // n, dim=0)
        return cond

    def fit(self, X: Any, y: Any = None, **kwargs: Any) -> "WaveResNetRegressor":
        self.conditioning_builder_ = self._resolved_builder() if self.context_dim else None
        return super().fit(X, y, **kwargs)

    def _saved_params(self) -> dict[str, Any]:
        params = super()._saved_params()
        builder = params.get("conditioning_builder")
        if builder is not None and not isinstance(builder, str):
            params["conditioning_builder"] = import_path_of(builder, "conditioning_builder")
        return params

    # -- shaped inputs --------------------------------------------------------------------------
    def _prepare_X(self, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2 or not self.preserve_shape:
            return super()._prepare_X(X)
        moved = to_channels_first(X, self.data_format).movedim(1, -1)
        return moved.reshape(-1, moved.shape[-1])

    def _prepare_y(self, y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2 or not self.preserve_shape:
            return super()._prepare_y(y, X)
        moved = check_per_position_targets(y, spatial_shape(X, self.data_format), self.data_format).movedim(1, -1)
        return moved.reshape(-1, moved.shape[-1])

    def _restore_output(self, out: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2 or not self.preserve_shape:
            return out
        positions = spatial_shape(X, self.data_format)
        per_position = out.reshape(X.shape[0], *positions, out.shape[-1]).movedim(-1, 1)
        return from_channels_first(per_position, self.data_format)
