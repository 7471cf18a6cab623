"""PSANNRegressor and ResPSANNRegressor: dense and residual sine networks over feature rows."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from psann.estimators._base import BasePSANNEstimator
from psann.estimators._streaming import StreamingMixin
from psann.estimators._params import DEPRECATED, Int, Real
from psann.estimators._shared import TRAINING_CONSTRAINTS, sine_config
from psann.models import PSANNNet, ResPSANNNet

__all__ = ["PSANNRegressor", "ResPSANNRegressor"]

# Deprecated keyword -> canonical parameter (a DeprecationWarning at fit; both given and different
# is an error).
_DEPRECATED = {"hidden_width": "hidden_units"}


class PSANNRegressor(StreamingMixin, BasePSANNEstimator):
    """Dense sine-activated network regressor on scikit-learn's estimator base.

    N-D samples ((N, C, L), (N, C, H, W), channels first or last per ``data_format``) are flattened
    channels-first into features; ``preserve_shape=True`` is refused (no per-position outputs).

    With ``state`` (a ``psann.StateConfig`` or a mapping of its fields) the network is stateful: a
    StateController follows every sine layer, rows are never shuffled, the state is reset per
    ``state_reset`` ("batch", "epoch" or "none"), and ``predict_sequence``,
    ``predict_sequence_online`` and ``step`` (at ``stream_lr``) carry it (docs/stateful.md).

    Example::

        X = np.linspace(-3, 3, 512, dtype=np.float32).reshape(-1, 1)
        y = np.exp(-0.3 * np.abs(X[:, 0])) * np.sin(3 * X[:, 0])
        est = PSANNRegressor(epochs=300, random_state=0).fit(X, y)
        est.score(X, y)   # R^2
    """

    _parameter_constraints = {**TRAINING_CONSTRAINTS, "hidden_units": Int(1), "hidden_layers": Int(1), "w0": Real(0.0, low_open=True)}
    _deprecated_params = _DEPRECATED

    def __init__(
        self,
        *,
        hidden_layers: int = 2,
        hidden_units: int = 64,
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
        preserve_shape: bool = False,
        data_format: str = "channels_first",
        hidden_width: Any = DEPRECATED,
    ) -> None:
        self.hidden_layers = hidden_layers
        self.hidden_units = hidden_units
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
        self.preserve_shape = preserve_shape
        self.data_format = data_format
        self.hidden_width = hidden_width

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        return PSANNNet(
            dim_in,
            dim_out,
            hidden_layers=self.hidden_layers,
            hidden_units=self.canonical_params()["hidden_units"],
            w0=self.w0,
            hidden_w0=self.hidden_w0,
            sine=sine_config(self),
            state=self.state_config(),
        )


class ResPSANNRegressor(PSANNRegressor):
    """Residual sine network regressor: ``hidden_layers`` residual blocks with DropPath."""

    _parameter_constraints = {**PSANNRegressor._parameter_constraints, "drop_path": Real(0.0, 0.99)}

    def __init__(
        self,
        *,
        hidden_layers: int = 2,
        hidden_units: int = 64,
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
        drop_path: float = 0.0,
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
        preserve_shape: bool = False,
        data_format: str = "channels_first",
        hidden_width: Any = DEPRECATED,
    ) -> None:
        self.drop_path = drop_path
        super().__init__(
            hidden_layers=hidden_layers,
            hidden_units=hidden_units,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs,
            early_stopping=early_stopping,
            patience=patience,
            grad_clip=grad_clip,
            random_state=random_state,
            device=device,
            w0=w0,
            hidden_w0=hidden_w0,
            amplitude_init=amplitude_init,
            frequency_init=frequency_init,
            decay_init=decay_init,
            decay_mode=decay_mode,
            learnable=learnable,
            activation_bounds=activation_bounds,
            standardize=standardize,
            verbose=verbose,
            mixed_precision=mixed_precision,
            amp_dtype=amp_dtype,
            compile=compile,
            state=state,
            state_reset=state_reset,
            stream_lr=stream_lr,
            expander=expander,
            lsm_lr=lsm_lr,
            embedder=embedder,
            preserve_shape=preserve_shape,
            data_format=data_format,
            hidden_width=hidden_width,
        )

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        return ResPSANNNet(
            dim_in,
            dim_out,
            hidden_layers=self.hidden_layers,
            hidden_units=self.canonical_params()["hidden_units"],
            w0=self.w0,
            hidden_w0=self.hidden_w0,
            drop_path=self.drop_path,
            sine=sine_config(self),
            state=self.state_config(),
        )
