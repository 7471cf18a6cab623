"""PSANNRegressor, ResPSANNRegressor and WaveResNetRegressor."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from psann.activations import SineConfig
from psann.estimators._base import BasePSANNEstimator
from psann.estimators._params import Anything, Bool, DeviceSpec, Int, NoneOr, Options, Real
from psann.models import PSANNNet, ResPSANNNet, WaveResNet
from psann.schedules import ProgressiveDepth, W0Warmup
from psann.training import Callback

__all__ = ["PSANNRegressor", "ResPSANNRegressor", "WaveResNetRegressor"]

_COMMON_CONSTRAINTS = {
    "hidden_units": Int(1),
    "epochs": Int(1),
    "batch_size": Int(1),
    "lr": Real(0.0, low_open=True),
    "weight_decay": Real(0.0),
    "lr_schedule": Options(("constant", "cosine", "linear")),
    "warmup_epochs": Real(0.0),
    "early_stopping": Bool(),
    "patience": Int(1),
    "grad_clip": NoneOr(Real(0.0, low_open=True)),
    "random_state": NoneOr(Int(0)),
    "device": DeviceSpec(),
    "hidden_w0": Real(0.0, low_open=True),
    "amplitude_init": Real(0.0, low_open=True),
    "frequency_init": Real(0.0, low_open=True),
    "decay_init": Real(0.0, low_open=True),
    "decay_mode": Options(("abs", "relu", "none")),
    "learnable": Anything("'all', 'none' or a list of amplitude/frequency/decay"),
    "activation_bounds": Anything("None or {name: [low, high]}"),
    "standardize": Bool(),
    "verbose": Int(0),
}


def _sine_config(est: BasePSANNEstimator) -> SineConfig:
    learnable = est.learnable if isinstance(est.learnable, str) else tuple(est.learnable)
    bounds = None
    if est.activation_bounds:
        bounds = {k: tuple(v) for k, v in dict(est.activation_bounds).items()}
    return SineConfig(
        amplitude_init=est.amplitude_init,
        frequency_init=est.frequency_init,
        decay_init=est.decay_init,
        decay_mode=est.decay_mode,
        learnable=learnable,
        bounds=bounds,
    )


class PSANNRegressor(BasePSANNEstimator):
    """Dense sine-activated network regressor (sklearn-style).

    Example::

        X = np.linspace(-3, 3, 512, dtype=np.float32).reshape(-1, 1)
        y = np.exp(-0.3 * np.abs(X[:, 0])) * np.sin(3 * X[:, 0])
        est = PSANNRegressor(epochs=300, random_state=0).fit(X, y)
        est.score(X, y)   # R^2
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "hidden_layers": Int(1), "w0": Real(0.0, low_open=True)}

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
        **aliases: Any,
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
        self._apply_aliases(aliases)

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        return PSANNNet(
            dim_in,
            dim_out,
            hidden_layers=self.hidden_layers,
            hidden_units=self.hidden_units,
            w0=self.w0,
            hidden_w0=self.hidden_w0,
            sine=_sine_config(self),
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
        **aliases: Any,
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
            **aliases,
        )

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        return ResPSANNNet(
            dim_in,
            dim_out,
            hidden_layers=self.hidden_layers,
            hidden_units=self.hidden_units,
            w0=self.w0,
            hidden_w0=self.hidden_w0,
            drop_path=self.drop_path,
            sine=_sine_config(self),
        )


class WaveResNetRegressor(BasePSANNEstimator):
    """WaveResNet regressor with w0 warm-up and progressive depth schedules.

    Inputs are (N, F) rows, or with ``preserve_shape=True`` (N, C, *) / (N, *, C) arrays whose
    every position is mapped to an output vector (``data_format`` says where the channels are).
    With ``preserve_shape=False`` such arrays are flattened to (N, C * prod(*)).
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "depth": Int(0),
        "first_layer_w0": Real(0.0, low_open=True),
        "context_dim": Int(0),
        "phase_shift": Bool(),
        "dropout": Real(0.0, 0.99),
        "w0_warmup_epochs": Int(0),
        "progressive_depth_initial": NoneOr(Int(0)),
        "progressive_depth_interval": NoneOr(Int(1)),
        "preserve_shape": Bool(),
        "data_format": Options(("channels_first", "channels_last")),
    }

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
        **aliases: Any,
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
        self._apply_aliases(aliases)

    def _validate_params(self) -> None:
        super()._validate_params()
        initial = self.progressive_depth_initial
        if initial is not None and initial > self.depth:
            raise ValueError(
                f"The 'progressive_depth_initial' parameter of {type(self).__name__} must be <= depth "
                f"({self.depth}). Got {initial!r} instead."
            )
        if initial is not None and self.progressive_depth_interval is None:
            raise ValueError(
                f"The 'progressive_depth_interval' parameter of {type(self).__name__} must be set when "
                "progressive_depth_initial is. Got None instead."
            )
        if self.context_dim:
            raise ValueError(
                f"The 'context_dim' parameter of {type(self).__name__} must be 0 for estimator fits "
                f"(FiLM context is available on psann.models.WaveResNet). Got {self.context_dim!r} instead."
            )

    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        initial_depth = self.depth if self.progressive_depth_initial is None else self.progressive_depth_initial
        return WaveResNet(
            dim_in,
            dim_out,
            hidden_units=self.hidden_units,
            depth=initial_depth,
            first_layer_w0=self.first_layer_w0,
            hidden_w0=self.hidden_w0,
            context_dim=self.context_dim,
            phase_shift=self.phase_shift,
            dropout=self.dropout,
            sine=_sine_config(self),
        )

    def _fit_callbacks(self) -> list[Callback]:
        callbacks: list[Callback] = []
        if self.w0_warmup_epochs:
            callbacks.append(W0Warmup(self.first_layer_w0, self.w0_warmup_epochs))
        if self.progressive_depth_initial is not None:
            callbacks.append(ProgressiveDepth(self.depth, int(self.progressive_depth_interval)))
        return callbacks

    # -- shaped inputs --------------------------------------------------------------------------
    def _channels_last(self, X: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_first":
            return X.movedim(1, -1)
        return X

    def _prepare_X(self, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2:
            return X
        if self.preserve_shape:
            moved = self._channels_last(X)
            return moved.reshape(-1, moved.shape[-1])
        return X.reshape(X.shape[0], -1)

    def _prepare_y(self, y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2 or not self.preserve_shape:
            return y.reshape(y.shape[0], -1) if y.dim() > 2 else y
        spatial = X.shape[2:] if self.data_format == "channels_first" else X.shape[1:-1]
        expected_last = (y.shape[0], *spatial)
        if self.data_format == "channels_first":
            if y.dim() != X.dim() or tuple(y.shape[2:]) != tuple(spatial):
                raise ValueError(
                    f"with preserve_shape=True and channels_first, y must be (N, out, {', '.join(map(str, spatial))}); "
                    f"got {tuple(y.shape)}"
                )
        elif y.dim() != X.dim() or tuple(y.shape[:-1]) != expected_last:
            raise ValueError(
                f"with preserve_shape=True and channels_last, y must be (N, {', '.join(map(str, spatial))}, out); "
                f"got {tuple(y.shape)}"
            )
        moved = self._channels_last(y)
        return moved.reshape(-1, moved.shape[-1])

    def _restore_output(self, out: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if X.dim() == 2 or not self.preserve_shape:
            return out
        if self.data_format == "channels_first":
            spatial = X.shape[2:]
            return out.reshape(X.shape[0], *spatial, out.shape[-1]).movedim(-1, 1)
        return out.reshape(*X.shape[:-1], out.shape[-1])
