"""The scikit-learn estimator base shared by every PSANN estimator.

``__init__`` only stores its arguments (deprecated aliases are explicit keyword parameters whose
default is ``"deprecated"``); validation and work happen in ``fit``; learned state ends in an
underscore. Input validation lives in ``_input``, the HISSO fit path in ``_hisso``.
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

from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils.validation import check_is_fitted

from psann.errors import ValidationError, short_repr
from psann.estimators._input import validate_X, validate_y
from psann.estimators._layout import to_channels_first
from psann.estimators._params import DEPRECATED, check_params, warn_deprecated
from psann.estimators._shared import build_embedder, build_expander_for, check_optional_parts
from psann.lsm import expander_spec
from psann.text import SineTokenEmbedder
from psann.snapshot import TrainingSnapshot
from psann.supervised import SupervisedPhase
from psann.training import Callback, LoopConfig, TrainingLoop

__all__ = ["BasePSANNEstimator", "resolve_device"]

logger = logging.getLogger("psann.estimators")


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn the ``device`` parameter into a torch.device; "auto" picks CUDA when present."""
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValidationError("device", f"{str(device)!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


class _Standardised(nn.Module):
    """The estimator's model: input standardisation (buffers, saved with the weights), then the
    optional parts, then the network.

    forward(x): [split off conditioning] -> embed token ids (``embedder``) or standardise ->
    ``expander`` -> ``net``. The expander sits after standardisation so its fixed random weights
    see unit-scale inputs whatever the data's units; the network's input width is the expander's
    output width. With ``conditioning_dim`` > 0 the last that many columns of each input row are
    per-sample conditioning: split off (not standardised, not expanded) and passed to the network.
    ``expander_lr`` (the estimator's ``lsm_lr``) gives the expander its own optimiser group.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        conditioning_dim: int = 0,
        embedder: nn.Module | None = None,
        expander: nn.Module | None = None,
        expander_lr: float | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.conditioning_dim = int(conditioning_dim)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        # Registered only when present, so a model without them keeps its state_dict keys.
        self.embedder = embedder
        self.expander = expander
        self.expander_lr = None if expander_lr is None else float(expander_lr)

    @property
    def stateful(self) -> bool:
        return bool(getattr(self.net, "stateful", False))

    def reset_state(self) -> None:
        self.net.reset_state()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the network sees for inputs ``x`` (without conditioning columns)."""
        if self.embedder is not None:
            if x.dim() == 3:  # (n, 1, L): a sequence network takes the embeddings (n, d, L)
                x = self.embedder(x[:, 0])
            else:  # (n, L) rows: embeddings flattened channels-first, like any (n, C, L) sample
                x = self.embedder(x).flatten(1)
        else:
            x = (x - self.mean) / self.std
        return self.expander(x) if self.expander is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conditioning_dim:
            x, conditioning = x[:, : -self.conditioning_dim], x[:, -self.conditioning_dim :]
            return self.net(self.features(x), conditioning)
        return self.net(self.features(x))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups: everything at ``lr``, except a trainable expander at
        ``expander_lr`` when set (its group carries ``lr_scale`` = expander_lr / lr, so an LR
        schedule scales both groups alike). Frozen expander weights are in no group."""
        if self.expander is None or self.expander_lr is None:
            return [{"params": list(self.parameters())}]
        expander_ids = {id(p) for p in self.expander.parameters()}
        groups: list[dict[str, Any]] = [{"params": [p for p in self.parameters() if id(p) not in expander_ids]}]
        trainable = [p for p in self.expander.parameters() if p.requires_grad]
        if trainable:
            groups.append(
                {"params": trainable, "lr": self.expander_lr, "lr_scale": self.expander_lr / float(lr), "name": "expander"}
            )
        return groups


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG inside the block only; the caller's RNG state is restored after."""
    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class BasePSANNEstimator(RegressorMixin, BaseEstimator):
    """Shared fit/predict/score/save/load on scikit-learn's estimator base.

    Subclasses declare ``_parameter_constraints`` (rules as data, checked by ``validate_params``),
    ``_deprecated_params`` (alias -> canonical name) and ``_build_network``.
    """

    _parameter_constraints: dict[str, Any] = {}
    _deprecated_params: dict[str, str] = {}
    _supports_preserve_shape = False  # per-position outputs (WaveResNet, ResConv)

    # -- parameters -----------------------------------------------------------------------------
    def canonical_params(self) -> dict[str, Any]:
        """``get_params()`` with each deprecated alias folded into its canonical name and removed.

        An alias given beside a canonical value that differs from it is a ValidationError whose key
        is the alias.
        """
        params = self.get_params(deep=False)
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        for alias, canonical in self._deprecated_params.items():
            value = params.pop(alias, DEPRECATED)
            if isinstance(value, str) and value == DEPRECATED:
                continue
            current = params[canonical]
            if current != defaults.get(canonical) and current != value:
                raise ValidationError(
                    alias,
                    f"{type(self).__name__} got {canonical}={short_repr(current)} and its deprecated alias "
                    f"{alias}={short_repr(value)}; pass only {canonical!r}",
                )
            params[canonical] = value
        return params

    def validate_params(self) -> None:
        """Check every parameter against its rule (ValidationError with ``.key`` = the parameter).

        A deprecated alias that was given warns (DeprecationWarning pointing at the caller).
        """
        given = {a: c for a, c in self._deprecated_params.items() if not _is_unset(getattr(self, a))}
        warn_deprecated(type(self).__name__, given)
        check_params(type(self).__name__, self._parameter_constraints, self.canonical_params())
        check_optional_parts(self)
        if getattr(self, "preserve_shape", False) and not self._supports_preserve_shape:
            raise ValidationError(
                "preserve_shape",
                f"{type(self).__name__} has no per-position outputs (it flattens N-D samples into features); "
                "use WaveResNetRegressor or ResConvPSANNRegressor for preserve_shape=True",
            )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    # -- hooks for subclasses -------------------------------------------------------------------
    def _build_network(self, dim_in: int, dim_out: int) -> nn.Module:
        raise NotImplementedError

    def _saved_params(self) -> dict[str, Any]:
        """The parameters recorded in a save's metadata.json (JSON values only).

        Subclasses extend it (calling super). The optional parts are recorded as the mappings that
        rebuild them (an LSMSpec's fields, the embedder's config); a custom nn.Module expander has
        no such description and is refused (ValidationError keyed ``expander``).
        """
        params = self.get_params(deep=False)
        if params.get("expander") is not None:
            spec = expander_spec(params["expander"])
            if spec is None:
                raise ValidationError(
                    "expander",
                    f"a custom nn.Module ({type(params['expander']).__name__}) cannot be saved: metadata.json "
                    "rebuilds the expander from its spec; pass an LSMSpec or a mapping of its fields instead",
                )
            params["expander"] = spec.to_dict()
        if params.get("embedder") is not None:
            params["embedder"] = SineTokenEmbedder.coerce(params["embedder"]).config()
        return params

    def _fit_callbacks(self) -> list[Callback]:
        """Schedule callbacks this estimator adds to every loop of a fit (none by default)."""
        return []

    def _prepare_X(self, X: torch.Tensor) -> torch.Tensor:
        """Map validated input to what the network sees: (N, F) rows, N-D samples flattened channels-first."""
        return X if X.dim() == 2 else to_channels_first(X, self.data_format).reshape(X.shape[0], -1)

    def _input_stats(self, X_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardisation mean and std of the prepared inputs (per feature by default)."""
        return X_rows.mean(dim=0), X_rows.std(dim=0, unbiased=False).clamp_min(1e-6)

    def _conditioning_rows(self, conditioning: Any, X: Any, X_t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """Per-row conditioning for the prepared inputs (None when the estimator takes none)."""
        if conditioning is not None:
            raise ValidationError(
                "conditioning", f"{type(self).__name__} takes no conditioning (WaveResNetRegressor with context_dim > 0 does)"
            )
        return None

    def _restore_output(self, out: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Inverse of _prepare_X for outputs (identity for row inputs)."""
        return out

    def _prepare_y(self, y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], -1) if y.dim() > 2 else y

    # -- fitting --------------------------------------------------------------------------------
    def _effective_seed(self) -> int:
        if self.random_state is not None:
            return int(self.random_state)
        return int(np.random.SeedSequence().entropy % (2**31 - 1))

    def _loop_config(self, *, epochs: int, phase: str, **overrides: Any) -> LoopConfig:
        p = self.canonical_params()
        base = dict(
            epochs=epochs,
            lr=float(p["lr"]),
            weight_decay=float(p["weight_decay"]),
            lr_schedule=p["lr_schedule"],
            warmup_epochs=float(p["warmup_epochs"]),
            early_stopping=bool(p["early_stopping"]),
            patience=int(p["patience"]),
            grad_clip=p["grad_clip"],
            compile=bool(p["compile"]),
            phase=phase,
        )
        base.update(overrides)
        return LoopConfig(**base)

    def _init_model(self, X_rows: torch.Tensor, dim_out: int, device: torch.device, *, conditioning_dim: int = 0) -> _Standardised:
        mean, std = self._input_stats(X_rows)
        embedder = build_embedder(self)
        if not self.standardize or embedder is not None:  # token ids are never standardised
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        model = _Standardised(nn.Identity(), mean.detach().clone(), std.detach().clone(), conditioning_dim=conditioning_dim, embedder=embedder)
        model = model.to(device)
        if embedder is not None and embedder.pool and X_rows.dim() != 2:
            raise ValidationError(
                "embedder.pool", f"{type(self).__name__} takes the embedded sequence (N, d, L); use pool=False"
            )
        with torch.no_grad():
            sample = model.features(X_rows[:2])
        model.expander = build_expander_for(self, sample, device)
        model.expander_lr = None if self.lsm_lr is None else float(self.lsm_lr)
        if model.expander is not None:
            with torch.no_grad():
                sample = model.features(X_rows[:2])
        model.net = self._build_network(int(sample.shape[1]), dim_out).to(device)
        return model

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        validation_data: Sequence[Any] | None = None,
        hisso: bool = False,
        hisso_options: Any = None,
        context: Any = None,
        conditioning: Any = None,
        conditioning_val: Any = None,
        callbacks: Sequence[Callback] | None = None,
        resume_state: TrainingSnapshot | Mapping[str, Any] | None = None,
    ) -> "BasePSANNEstimator":
        """Fit on (X, y) by minibatch MSE, or by HISSO episodes when ``hisso=True``.

        Args:
            X: inputs (N, F), (N, C, L) or (N, C, H, W) (``data_format`` says where the channels are).
            y: targets (N,) or (N, n_outputs) (per position with preserve_shape); optional for HISSO.
            validation_data: (X_val, y_val) or, for HISSO, (X_val, y_val_or_None, context_val).
            hisso: train with the HISSO episodic reward trainer instead of regression.
            hisso_options: a ``psann.hisso.HISSOOptions`` or a dict of its fields.
            context: HISSO reward context (e.g. prices), one row per row of X.
            conditioning: per-sample conditioning (N, context_dim) for WaveResNetRegressor's FiLM
                blocks (or leave None and set ``conditioning_builder``); ``conditioning_val`` for
                the validation rows.
            callbacks: extra training-loop callbacks (logging, run folders, Tune reporting).
            resume_state: a ``TrainingSnapshot`` (``loop.snapshot()``) or its ``to_dict()``.

        Example::

            est = PSANNRegressor(epochs=200, random_state=0).fit(X, y)
            est.score(X, y)
        """
        self.validate_params()
        device = resolve_device(self.device)
        self.device_ = device
        self.seed_ = self._effective_seed()
        self.compile_ = None  # summed over this fit's loops by _run_loop
        callbacks = list(callbacks or [])
        snapshot = TrainingSnapshot.coerce(resume_state) if resume_state is not None else None
        with _seeded(self.seed_, device):
            if hisso:
                from psann.estimators._hisso import fit_hisso

                fit_hisso(
                    self,
                    X,
                    y,
                    options=hisso_options,
                    context=context,
                    validation_data=validation_data,
                    conditioning=(conditioning, conditioning_val),
                    callbacks=callbacks,
                    device=device,
                    resume_state=snapshot,
                )
            else:
                if y is None:
                    raise ValueError(
                        f"{type(self).__name__} requires y to be passed, but the target y is None "
                        "(pass hisso=True to train on rewards without targets)"
                    )
                self._fit_supervised(X, y, validation_data, (conditioning, conditioning_val), callbacks, device, snapshot)
        return self

    def model_inputs(self, X: Any, X_t: torch.Tensor, conditioning: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(prepared rows, network inputs): the inputs are the rows plus any conditioning columns."""
        rows = self._prepare_X(X_t)
        cond = self._conditioning_rows(conditioning, X, X_t, rows)
        return rows, rows if cond is None else torch.cat([rows, cond], dim=1)

    def _fit_supervised(self, X, y, validation_data, conditioning, callbacks, device, snapshot) -> None:
        X_t = validate_X(self, X, reset=True, device=device)
        y_t, self.y_was_1d_ = validate_y(y, X_t.shape[0], device=device)
        self.output_shape_ = tuple(int(s) for s in y_t.shape[1:])
        X_rows, X_in = self.model_inputs(X, X_t, conditioning[0])
        y_rows = self._prepare_y(y_t, X_t)
        X_val_in = y_val_rows = None
        if validation_data is not None:
            X_val, y_val = validation_data[0], validation_data[1]
            X_val_t = validate_X(self, X_val, reset=False, device=device, name="X_val")
            y_val_t, _ = validate_y(y_val, X_val_t.shape[0], device=device, name="y_val")
            _, X_val_in = self.model_inputs(X_val, X_val_t, conditioning[1])
            y_val_rows = self._prepare_y(y_val_t, X_val_t)
        conditioning_dim = X_in.shape[1] - X_rows.shape[1]
        self.model_ = self._init_model(X_rows, y_rows.shape[1], device, conditioning_dim=conditioning_dim)
        self.hisso_ = None
        generator = torch.Generator().manual_seed(self.seed_)
        phase = SupervisedPhase(
            X_in,
            y_rows,
            batch_size=self.batch_size,
            generator=generator,
            X_val=X_val_in,
            y_val=y_val_rows,
            stateful=self.model_.stateful,
            state_reset=self.state_reset,
        )
        config = self._loop_config(
            epochs=int(self.epochs), phase="supervised", mixed_precision=self.mixed_precision, amp_dtype=self.amp_dtype
        )
        loop = self._run_loop(phase, config, callbacks, device, snapshot)
        self.history_ = loop.history
        self.best_epoch_ = loop.best_epoch

    def _run_loop(
        self,
        phase: Any,
        config: LoopConfig,
        callbacks: Sequence[Callback],
        device: torch.device,
        snapshot: TrainingSnapshot | None,
        *,
        schedules: Sequence[Callback] | None = None,
    ) -> TrainingLoop:
        schedules = list(self._fit_callbacks() if schedules is None else schedules)
        all_callbacks = schedules + [_LogEpochs(self.verbose)] + list(callbacks)
        loop = TrainingLoop(self.model_, config, device=device, callbacks=all_callbacks)
        if snapshot is not None:
            loop.restore(snapshot, phase)
        loop.run(phase)
        self.model_ = loop.model
        self.model_.eval()
        self.amp_ = {
            "enabled": loop.amp_active,
            "dtype": config.amp_dtype if loop.amp_active else None,
            "skipped_steps": loop.skipped_steps,
        }
        # Summed over the loops of a fit (a warm start compiles its own graphs).
        previous = self.compile_
        self.compile_ = {
            "enabled": config.compile,
            "seconds": loop.compile_seconds + (previous["seconds"] if previous else 0.0),
            "graphs": loop.compiled_graphs + (previous["graphs"] if previous else 0),
        }
        return loop

    # -- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_tensor(
        self, X: Any, *, conditioning: Any = None, batch_size: int = 4096, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Raw outputs as a tensor on the fitted device (no host copy; HISSO evaluation uses it).

        Shapes follow ``predict`` except that a 1-D target is not squeezed: (n_samples, n_outputs).
        ``dtype=torch.float64`` evaluates a float64 copy of the network (what ``predict`` does).
        """
        check_is_fitted(self)
        X_t = validate_X(self, X, reset=False, device=self.device_)
        rows = self.model_inputs(X, X_t, conditioning)[1].to(dtype)
        model = self.model_ if dtype == torch.float32 else copy.deepcopy(self.model_).to(dtype)
        model.eval()
        outs = [model(rows[i : i + batch_size]) for i in range(0, rows.shape[0], batch_size)]
        out = torch.cat(outs) if outs else rows.new_zeros((0, model.net.dim_out))
        return self._restore_output(out, X_t)

    def predict(self, X: Any, *, conditioning: Any = None) -> np.ndarray:
        """Predict outputs for X; (n_samples,) when fitted on a 1-D y.

        The float32-trained network is evaluated in float64, so a row's prediction does not depend
        on which other rows share its batch (float32 matrix kernels differ by batch size; sklearn's
        subset-invariance check caught 5e-7 differences at w0=30).
        """
        out = self.predict_tensor(X, conditioning=conditioning, dtype=torch.float64).cpu().numpy()
        if getattr(self, "y_was_1d_", False) and out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2 (uniform average over outputs and positions)."""
        pred = self.predict(X)
        y_true = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        n = pred.shape[0]
        return float(r2_score(y_true.reshape(n, -1), pred.reshape(n, -1), sample_weight=sample_weight))

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


def _is_unset(value: Any) -> bool:
    return isinstance(value, str) and value == DEPRECATED


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
