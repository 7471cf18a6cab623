"""The sklearn-style surface shared by every PSANN estimator.

``__init__`` only stores its arguments (deprecated aliases are mapped to their canonical names);
validation and work happen in ``fit``; learned state ends in an underscore.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from psann.estimators._params import check_params, split_aliases
from psann.training import Callback, LoopConfig, SupervisedPhase, TrainingLoop

__all__ = ["BasePSANNEstimator", "resolve_device"]

logger = logging.getLogger("psann.estimators")

ALIASES = {"hidden_width": "hidden_units", "hidden_channels": "conv_channels"}


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn the ``device`` parameter into a torch.device; "auto" picks CUDA when present."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


class _Standardised(nn.Module):
    """Wraps a network with input standardisation kept as buffers (saved with the weights)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @property
    def stateful(self) -> bool:
        return bool(getattr(self.net, "stateful", False))

    def reset_state(self) -> None:
        self.net.reset_state()

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.net((x - self.mean) / self.std, *args)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG inside the block only; the caller's RNG state is restored after."""
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class BasePSANNEstimator:
    """Shared fit/predict/score/save/load; subclasses declare params and build their network."""

    _parameter_constraints: dict[str, Any] = {}

    # -- sklearn parameter protocol -------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def _apply_aliases(self, aliases: Mapping[str, Any]) -> None:
        if not aliases:
            return
        names = self._get_param_names()
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        for canonical, value in split_aliases(type(self).__name__, ALIASES, aliases, names).items():
            current = getattr(self, canonical)
            if current != defaults.get(canonical) and current != value:
                raise ValueError(
                    f"{type(self).__name__}: both {canonical!r}={current!r} and its deprecated alias "
                    f"(={value!r}) were given with different values; pass only {canonical!r}"
                )
            setattr(self, canonical, value)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> "BasePSANNEstimator":
        names = self._get_param_names()
        aliases = {k: params.pop(k) for k in list(params) if k not in names}
        for key, value in params.items():
            setattr(self, key, value)
        if aliases:
            resolved = split_aliases(type(self).__name__, ALIASES, aliases, names)
            for canonical, value in resolved.items():
                if canonical in params and params[canonical] != value:
                    raise ValueError(
                        f"{type(self).__name__}.set_params: {canonical!r}={params[canonical]!r} conflicts "
                        f"with its deprecated alias (={value!r})"
                    )
                setattr(self, canonical, value)
        return self

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k, object()) != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_tags__(self):  # pragma: no cover - only used when scikit-learn is installed
        from sklearn.utils import Tags, RegressorTags, TargetTags, InputTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True, multi_output=True, single_output=True),
            regressor_tags=RegressorTags(),
            input_tags=InputTags(),
        )

    _estimator_type = "regressor"

    # -- hooks for subclasses -------------------------------------------------------------------
    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        raise NotImplementedError

    def _fit_callbacks(self) -> list[Callback]:
        """Schedule callbacks this estimator adds to every loop of a fit (none by default)."""
        return []

    def _prepare_X(self, X: torch.Tensor) -> torch.Tensor:
        """Map validated input to the (N, F) rows the network sees (identity for dense inputs)."""
        if X.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects X of shape (n_samples, n_features); got shape {tuple(X.shape)}")
        return X

    def _restore_output(self, out: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Inverse of _prepare_X for outputs (identity for dense inputs)."""
        return out

    def _prepare_y(self, y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return y

    # -- validation -----------------------------------------------------------------------------
    def _validate_params(self) -> None:
        check_params(type(self).__name__, self._parameter_constraints, self.get_params())

    def _as_tensor(self, data: Any, name: str, device: torch.device) -> torch.Tensor:
        """float32 tensor on device; no copy when it already is one. NaN/inf are refused."""
        if isinstance(data, torch.Tensor):
            tensor = data if (data.dtype == torch.float32 and data.device == device) else data.to(device, torch.float32)
        else:
            array = np.asarray(data)
            if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
                raise TypeError(f"{name} must be numeric; got dtype {array.dtype}")
            tensor = torch.as_tensor(array, dtype=torch.float32).to(device)
        if tensor.dim() == 0:
            raise ValueError(f"{name} must be at least 1-D; got a scalar")
        if tensor.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = tuple(int(i) for i in (~finite).nonzero()[0].tolist())
            raise ValueError(f"{name} contains NaN or inf (first at index {bad}, shape {tuple(tensor.shape)})")
        return tensor

    def _check_X(self, X: Any, device: torch.device, *, name: str = "X") -> torch.Tensor:
        tensor = self._as_tensor(X, name, device)
        if tensor.dim() == 1:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features); got 1-D shape {tuple(tensor.shape)}. "
                "Reshape with X.reshape(-1, 1) for a single feature."
            )
        if tensor[0].numel() == 0:
            # Without this a zero-width layer reached siren_init_ and died with ZeroDivisionError.
            raise ValueError(f"{name} has 0 features (shape {tuple(tensor.shape)}); at least 1 is required")
        return tensor

    def _check_y(self, y: Any, X: torch.Tensor, device: torch.device, *, name: str = "y") -> torch.Tensor:
        tensor = self._as_tensor(y, name, device)
        if tensor.dim() == 1:
            tensor = tensor.unsqueeze(1)
        if tensor.shape[0] != X.shape[0]:
            raise ValueError(
                f"X and {name} have different numbers of samples: X {tuple(X.shape)}, {name} {tuple(tensor.shape)}"
            )
        return tensor

    # -- fitting --------------------------------------------------------------------------------
    def _effective_seed(self) -> int:
        if self.random_state is not None:
            return int(self.random_state)
        return int(np.random.SeedSequence().entropy % (2**31 - 1))

    def _loop_config(self, *, epochs: int, phase: str, **overrides: Any) -> LoopConfig:
        base = dict(
            epochs=epochs,
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            lr_schedule=self.lr_schedule,
            warmup_epochs=float(self.warmup_epochs),
            early_stopping=bool(self.early_stopping),
            patience=int(self.patience),
            grad_clip=self.grad_clip,
            phase=phase,
        )
        base.update(overrides)
        return LoopConfig(**base)

    def _init_model(self, X_rows: torch.Tensor, dim_out: int, device: torch.device) -> _Standardised:
        dim_in = X_rows.shape[1]
        if self.standardize:
            mean = X_rows.mean(dim=0)
            std = X_rows.std(dim=0, unbiased=False).clamp_min(1e-6)
        else:
            mean = torch.zeros(dim_in, device=device)
            std = torch.ones(dim_in, device=device)
        net = self._build_network(dim_in, dim_out)
        return _Standardised(net, mean.detach().clone(), std.detach().clone()).to(device)

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        validation_data: Sequence[Any] | None = None,
        hisso: bool = False,
        hisso_options: Any = None,
        context: Any = None,
        callbacks: Sequence[Callback] | None = None,
        resume_state: Mapping[str, Any] | None = None,
    ) -> "BasePSANNEstimator":
        """Fit on (X, y) by minibatch MSE, or by HISSO episodes when ``hisso=True``.

        Args:
            X: inputs, (n_samples, n_features) (WaveResNet also takes (N, C, *) with preserve_shape).
            y: targets (n_samples,) or (n_samples, n_outputs); optional for HISSO (warm start).
            validation_data: (X_val, y_val) or, for HISSO, (X_val, y_val_or_None, context_val).
            hisso: train with the HISSO episodic reward trainer instead of regression.
            hisso_options: a ``psann.hisso.HISSOOptions`` or a dict of its fields.
            context: HISSO reward context (e.g. prices), one row per row of X.
            callbacks: extra training-loop callbacks (logging, run folders, Tune reporting).
            resume_state: a state from a ``psann.training``-loop checkpoint to continue from.

        Example::

            est = PSANNRegressor(epochs=200, random_state=0).fit(X, y)
            est.score(X, y)
        """
        self._validate_params()
        device = resolve_device(self.device)
        self.device_ = device
        self.seed_ = self._effective_seed()
        callbacks = list(callbacks or [])
        with _seeded(self.seed_, device):
            if hisso:
                from psann.hisso.trainer import fit_hisso

                fit_hisso(
                    self,
                    X,
                    y,
                    options=hisso_options,
                    context=context,
                    validation_data=validation_data,
                    callbacks=callbacks,
                    device=device,
                    resume_state=resume_state,
                )
            else:
                if y is None:
                    raise ValueError(f"{type(self).__name__}.fit needs y unless hisso=True")
                self._fit_supervised(X, y, validation_data, callbacks, device, resume_state)
        return self

    def _fit_supervised(self, X, y, validation_data, callbacks, device, resume_state) -> None:
        X_t = self._check_X(X, device)
        y_t = self._check_y(y, X_t, device)
        self._remember_shapes(X_t, y_t)
        self.y_was_1d_ = getattr(y, "ndim", None) == 1 or (not hasattr(y, "ndim") and np.ndim(y) == 1)
        X_rows, y_rows = self._prepare_X(X_t), self._prepare_y(y_t, X_t)
        X_val_rows = y_val_rows = None
        if validation_data is not None:
            X_val, y_val = validation_data[0], validation_data[1]
            X_val_t = self._check_X(X_val, device, name="X_val")
            self._check_feature_shape(X_val_t, "X_val")
            y_val_t = self._check_y(y_val, X_val_t, device, name="y_val")
            X_val_rows, y_val_rows = self._prepare_X(X_val_t), self._prepare_y(y_val_t, X_val_t)
        self.model_ = self._init_model(X_rows, y_rows.shape[1], device)
        self.hisso_ = None
        generator = torch.Generator().manual_seed(self.seed_)
        phase = SupervisedPhase(
            X_rows,
            y_rows,
            batch_size=self.batch_size,
            generator=generator,
            X_val=X_val_rows,
            y_val=y_val_rows,
            stateful=self.model_.stateful,
        )
        loop = self._run_loop(
            phase, self._loop_config(epochs=int(self.epochs), phase="supervised"), callbacks, device, resume_state
        )
        self.history_ = loop.history
        self.best_epoch_ = loop.best_epoch

    def _run_loop(
        self,
        phase: Any,
        config: LoopConfig,
        callbacks: Sequence[Callback],
        device: torch.device,
        resume_state: Mapping[str, Any] | None,
        *,
        schedules: Sequence[Callback] | None = None,
    ) -> TrainingLoop:
        schedules = list(self._fit_callbacks() if schedules is None else schedules)
        all_callbacks = schedules + [_LogEpochs(self.verbose)] + list(callbacks)
        loop = TrainingLoop(self.model_, config, device=device, callbacks=all_callbacks)
        loop.phase_ref = phase
        if resume_state is not None:
            restore_training_state(loop, phase, resume_state)
        self._loop = loop
        try:
            loop.run(phase)
        finally:
            self._loop = None
        self.model_ = loop.model
        self.model_.eval()
        self.amp_ = {
            "enabled": loop.amp_active,
            "dtype": config.amp_dtype if loop.amp_active else None,
            "skipped_steps": loop.skipped_steps,
        }
        return loop

    def _remember_shapes(self, X: torch.Tensor, y: torch.Tensor | None) -> None:
        self.input_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_features_in_ = int(np.prod(self.input_shape_))
        self.output_shape_ = tuple(int(s) for s in y.shape[1:]) if y is not None else None
        self.y_was_1d_ = False

    def _check_feature_shape(self, X: torch.Tensor, name: str) -> None:
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"{name} has shape {tuple(X.shape)}; expected (n, {', '.join(map(str, self.input_shape_))}) "
                "as in fit"
            )

    # -- inference ------------------------------------------------------------------------------
    def _check_is_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"This {type(self).__name__} instance is not fitted yet; call fit() first")

    @torch.no_grad()
    def _forward_rows(self, X_rows: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        self.model_.eval()
        outs = [self.model_(X_rows[i : i + batch_size]) for i in range(0, X_rows.shape[0], batch_size)]
        return torch.cat(outs) if outs else X_rows.new_zeros((0, self.model_.net.dim_out))

    def predict(self, X: Any) -> np.ndarray:
        """Predict outputs for X; returns (n_samples,) when fitted on a 1-D y."""
        self._check_is_fitted()
        X_t = self._check_X(X, self.device_)
        self._check_feature_shape(X_t, "X")
        out = self._restore_output(self._forward_rows(self._prepare_X(X_t)), X_t)
        out = out.cpu().numpy()
        if getattr(self, "y_was_1d_", False) and out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def score(self, X: Any, y: Any) -> float:
        """Coefficient of determination R^2 (uniform average over outputs)."""
        pred = np.asarray(self.predict(X), dtype=np.float64)
        y_true = np.asarray(y, dtype=np.float64).reshape(pred.shape)
        y2 = y_true.reshape(y_true.shape[0], -1)
        p2 = pred.reshape(pred.shape[0], -1)
        ss_res = ((y2 - p2) ** 2).sum(axis=0)
        ss_tot = ((y2 - y2.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.where(ss_res == 0, 1.0, 0.0))
        return float(r2.mean())

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Any, *, overwrite: bool = False) -> None:
        """Write weights (weights.pt) and JSON metadata (metadata.json) into directory ``path``."""
        from psann.estimators._persistence import save_estimator

        save_estimator(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: Any, *, device: str | torch.device | None = None) -> "BasePSANNEstimator":
        """Load an estimator written by ``save``; predictions equal those before saving."""
        from psann.estimators._persistence import load_estimator

        return load_estimator(cls, path, device=device)


class _LogEpochs(Callback):
    """One log line per epoch (INFO when verbose, DEBUG otherwise)."""

    def __init__(self, verbose: int) -> None:
        self.level = logging.INFO if verbose else logging.DEBUG

    def on_epoch_end(self, loop: TrainingLoop, record: dict[str, Any]) -> None:
        if not logger.isEnabledFor(self.level):
            return
        parts = [f"{record['phase']} epoch {record['epoch']}/{loop.config.epochs}"]
        for key in ("train_loss", "val_loss", "reward_mean", "val_mse", "episodes_per_second", "lr"):
            value = record.get(key)
            if isinstance(value, float) and math.isfinite(value):
                parts.append(f"{key}={value:.5g}")
        logger.log(self.level, " ".join(parts))


def training_state(loop: TrainingLoop) -> dict[str, Any]:
    """A resumable snapshot of a running loop: model weights, loop, phase and schedule states.

    The snapshot is a deep copy: state_dict() tensors (weights, Adam moments) share storage with
    the live model and optimiser, which keep training in place after the snapshot is taken.
    """
    net = getattr(loop.model, "net", loop.model)
    best_net = getattr(loop.best_model, "net", loop.best_model)
    return copy.deepcopy({
        "format": 1,
        "phase": loop.config.phase,
        "model": loop.model.state_dict(),
        "depth": getattr(net, "depth", None),
        # Progressive depth may have grown the net since the best epoch's snapshot was taken.
        "best_depth": getattr(best_net, "depth", None),
        "loop": loop.state_dict(),
        "phase_state": loop.phase_ref.state_dict(),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in loop.callbacks],
    })


def restore_training_state(loop: TrainingLoop, phase: Any, state: Mapping[str, Any]) -> None:
    """Load a ``training_state`` snapshot into a freshly built loop before ``run``."""
    net = getattr(loop.model, "net", loop.model)
    depth = state.get("depth")
    if depth is not None and hasattr(net, "add_blocks"):
        # Progressive depth adds one block (one optimiser param group) at a time; replay that so
        # the optimiser state's groups line up.
        while net.depth < depth:
            loop.add_parameters(net.add_blocks(1))
    loop.model.load_state_dict(state["model"])
    best_template = None
    best_depth = state.get("best_depth")
    if best_depth is not None and depth is not None and best_depth < depth:
        # The best epoch ran on a shallower net: rebuild that shape so its weights load.
        best_template = copy.deepcopy(loop.model)
        del getattr(best_template, "net", best_template).blocks[best_depth:]
    loop.load_state_dict(state["loop"], best_template=best_template)
    phase.load_state_dict(state["phase_state"])
    for callback, cb_state in zip(loop.callbacks, state.get("callbacks", [])):
        if cb_state is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(cb_state)
