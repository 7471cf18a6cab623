"""Stateful estimators and streaming: sequence prediction with carried state, online updates.

``StreamingMixin`` goes before ``BasePSANNEstimator`` in an estimator's bases. It wires the
``state``, ``state_reset`` and ``stream_lr`` parameters:

- ``state`` (None, a ``StateConfig`` or a mapping of its fields) builds the network with a
  StateController after every sine layer; it is validated with the other parameters (keys
  ``state``, ``state.rho``, ...) and saved as a plain dict.
- ``state_reset`` ("batch", "epoch" or "none") is the supervised fit's reset cadence.
- ``stream_lr`` (None: ``lr``) is the learning rate of ``step`` and ``predict_sequence_online``.

Shapes, for an estimator fitted on samples of shape S (``input_shape_``, e.g. (F,)):

- ``predict_sequence(X_seq)``: X_seq (T, *S) -> predictions like ``predict`` ((T,) or (T, k)),
  one sample at a time, in order, the state committed after each (teacher forcing: the inputs are
  the given rows, never fed-back predictions). No weights change.
- ``predict_sequence_online(X_seq, y_seq)``: y_seq has T rows, each a target as in fit; for every t
  the prediction for row t is made first, then the model takes one streaming update on (x_t, y_t).
  Returns the predictions made before each update (shaped as predict_sequence's).
- ``step(x, y)``: x is one sample (*S) or a batch (B, *S), y its target(s); one update, returns the
  loss before it.

The streaming optimiser (Adam at ``stream_lr``) is built on the first update and rebuilt only when
the model (a refit, a load, parameters added) or the learning rate changed since the last update;
``stream_optimizer_builds_`` counts the builds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from psann.errors import ValidationError
from psann.estimators._input import validate_X, validate_y
from psann.state import StateConfig
from psann.supervised import SupervisedPhase

__all__ = ["StreamingMixin"]


def _shape_of(value: Any, name: str) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(int(s) for s in value.shape)
    try:
        return tuple(int(s) for s in np.shape(value))
    except ValueError:  # ragged nested lists
        raise ValidationError(name, "expected a rectangular array or tensor, got a ragged sequence") from None


def _commit(model: nn.Module) -> None:
    """Commit the staged state of a stateful network (wrapped in the estimator's _Standardised)."""
    net = getattr(model, "net", model)
    commit = getattr(net, "commit_state", None)
    if getattr(net, "stateful", False) and callable(commit):
        commit()


def _fmt(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class StreamingMixin:
    """State configuration, teacher-forced and online sequence prediction, streaming updates."""

    # -- the state parameters ---------------------------------------------------------------------
    def state_config(self) -> StateConfig | None:
        """The ``state`` parameter as a StateConfig (None for a stateless estimator)."""
        return StateConfig.coerce(self.state, key="state")

    def validate_params(self) -> None:
        super().validate_params()  # type: ignore[misc]
        self.state_config()

    def _saved_params(self) -> dict[str, Any]:
        params = super()._saved_params()  # type: ignore[misc]
        # metadata.json holds JSON values only; every field is written, so a later change of a
        # default cannot change a saved model's state dynamics.
        config = self.state_config()
        params["state"] = None if config is None else config.to_dict()
        return params

    def _run_loop(self, phase: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        # The supervised phase (a fit, or HISSO's warm start) resets a stateful model's state on
        # this estimator's cadence; HISSO's own phase follows HISSOOptions.state_reset.
        if isinstance(phase, SupervisedPhase) and phase.stateful:
            phase.state_reset = self.state_reset
        loop = super()._run_loop(phase, config, *args, **kwargs)  # type: ignore[misc]
        cadence = getattr(phase, "state_reset", None) or getattr(getattr(phase, "options", None), "state_reset", None)
        if self.model_.stateful and cadence in ("batch", "epoch"):
            # Training (and validation) ran from reset states: leave the fitted model in one, so
            # predict after fit, after load and after a best-epoch restore all start alike.
            self.model_.reset_state()
        return loop

    @property
    def stateful_(self) -> bool:
        """Whether the fitted network holds state controllers."""
        check_is_fitted(self)
        return bool(self.model_.stateful)

    def reset_state(self) -> None:
        """Refill every state controller of the fitted network with its ``init`` value."""
        check_is_fitted(self)
        if self.model_.stateful:
            self.model_.reset_state()

    # -- inputs -------------------------------------------------------------------------------------
    def _sequence_inputs(self, X: Any, name: str, conditioning: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(validated X tensor, network inputs) for a sequence of samples, shapes checked with ``name``."""
        check_is_fitted(self)
        sample = tuple(int(s) for s in self.input_shape_)
        shape = _shape_of(X, name)
        if len(shape) != len(sample) + 1 or shape[1:] != sample or shape[0] < 1:
            raise ValidationError(
                name,
                f"expected shape {_fmt(('T',) + sample)} (T >= 1 samples of shape {_fmt(sample)} as in fit), "
                f"got {_fmt(shape)}",
            )
        try:
            X_t = validate_X(self, X, reset=False, device=self.device_, name=name)
        except ValidationError:
            raise
        except ValueError as exc:  # scikit-learn's own checks (NaN, dtype) name no key: this one does
            raise ValidationError(name, str(exc).splitlines()[0]) from exc
        return X_t, self.model_inputs(X, X_t, conditioning)[1]

    def _targets(self, y: Any, X_t: torch.Tensor, name: str, expected_rows: tuple[int, ...]) -> torch.Tensor:
        """Targets prepared like fit's, checked against the shape of the network's outputs."""
        try:
            y_t, _ = validate_y(y, X_t.shape[0], device=self.device_, name=name)
            y_rows = self._prepare_y(y_t, X_t)
        except ValidationError as err:
            raise ValidationError(name, err.reason) from None
        except ValueError as exc:  # scikit-learn's check_array (NaN, strings) names no key
            raise ValidationError(name, str(exc).splitlines()[0]) from exc
        if tuple(y_rows.shape) != expected_rows:
            raise ValidationError(
                name,
                f"expected {X_t.shape[0]} target rows giving outputs of shape {_fmt(expected_rows)} "
                f"({self.model_.net.dim_out} per row), got shape {_fmt(tuple(y_t.shape))}",
            )
        return y_rows

    def _finish(self, out: torch.Tensor, X_t: torch.Tensor) -> np.ndarray:
        result = self._restore_output(out, X_t).detach().cpu().numpy()
        if getattr(self, "y_was_1d_", False) and result.ndim == 2 and result.shape[1] == 1:
            result = result[:, 0]
        return result

    # -- teacher-forced and online sequences ----------------------------------------------------------
    @torch.no_grad()
    def predict_sequence(self, X_seq: Any, *, conditioning: Any = None) -> np.ndarray:
        """Predict rows of X_seq in order, carrying (and committing) the state from row to row.

        The state starts where it is (``reset_state()`` first to start from ``init``) and is left
        after the last row. Returns what ``predict`` would: (T,) or (T, n_outputs) (per position with
        preserve_shape). Runs the float32 network itself (``predict`` uses a float64 copy).

        Example::

            est = PSANNRegressor(state={"rho": 0.9}, epochs=50).fit(X, y)
            est.reset_state()
            y_hat = est.predict_sequence(X_test)
        """
        X_t, inputs = self._sequence_inputs(X_seq, "X_seq", conditioning)
        model = self.model_
        model.eval()
        per_sample = inputs.shape[0] // X_t.shape[0]
        outs = []
        for t in range(X_t.shape[0]):
            outs.append(model(inputs[t * per_sample : (t + 1) * per_sample]))
            _commit(model)
        return self._finish(torch.cat(outs), X_t)

    def predict_sequence_online(self, X_seq: Any, y_seq: Any, *, conditioning: Any = None) -> np.ndarray:
        """Predict each row of X_seq, then take one streaming update on its revealed target.

        Returns the predictions made before each update, shaped like ``predict_sequence``'s. With
        ``stream_lr=0`` the weights never move and the result equals ``predict_sequence(X_seq)``
        from the same starting state.
        """
        X_t, inputs = self._sequence_inputs(X_seq, "X_seq", conditioning)
        T = X_t.shape[0]
        per_sample = inputs.shape[0] // T
        expected = self._sample_output_shape(inputs[:per_sample])
        y_rows = self._targets(y_seq, X_t, "y_seq", (expected[0] * T, *expected[1:]))
        per_target = y_rows.shape[0] // T
        self.model_.eval()  # predictions in eval mode; each update switches to train mode and back
        outs = []
        for t in range(T):
            x_t = inputs[t * per_sample : (t + 1) * per_sample]
            with torch.no_grad():
                outs.append(self.model_(x_t))
            self._stream_update(x_t, y_rows[t * per_target : (t + 1) * per_target])
        return self._finish(torch.cat(outs), X_t)

    # -- streaming updates ---------------------------------------------------------------------------
    def step(self, x: Any, y: Any, *, conditioning: Any = None) -> float:
        """One streaming update on one sample (shape as in fit) or a batch of them; returns the loss.

        The loss is the MSE before the update; the state (if any) is committed after it.
        """
        check_is_fitted(self)
        sample = tuple(int(s) for s in self.input_shape_)
        single = _shape_of(x, "x") == sample
        if single:
            x = x.unsqueeze(0) if isinstance(x, torch.Tensor) else np.asarray(x)[None]
            y = y.reshape(1, *y.shape) if isinstance(y, torch.Tensor) else np.asarray(y)[None]
            if conditioning is not None:
                conditioning = (
                    conditioning.unsqueeze(0) if isinstance(conditioning, torch.Tensor) else np.asarray(conditioning)[None]
                )
        X_t, inputs = self._sequence_inputs(x, "x", conditioning)
        expected = self._sample_output_shape(inputs[: inputs.shape[0] // X_t.shape[0]])
        y_rows = self._targets(y, X_t, "y", (expected[0] * X_t.shape[0], *expected[1:]))
        return self._stream_update(inputs, y_rows)

    def _sample_output_shape(self, sample_inputs: torch.Tensor) -> tuple[int, ...]:
        """The network's output shape for one sample's inputs (found by one forward, then cached)."""
        key = tuple(sample_inputs.shape)
        cached = getattr(self, "_stream_output_for", None)
        if cached is not None and cached[0] is self.model_ and cached[1] == key:
            return cached[2]
        self.model_.eval()
        with torch.no_grad():  # stages a state that the next forward overwrites before any commit
            shape = tuple(int(n) for n in self.model_(sample_inputs).shape)
        self._stream_output_for = (self.model_, key, shape)
        return shape

    def _stream_lr(self) -> float:
        lr = self.lr if self.stream_lr is None else self.stream_lr
        name = "lr" if self.stream_lr is None else "stream_lr"
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
            raise ValidationError.expected(name, "a finite number >= 0 (the streaming learning rate)", lr)
        return float(lr)

    def _stream_optimizer(self) -> torch.optim.Optimizer:
        """Adam at the streaming lr, rebuilt only when the model or the lr changed since the last update."""
        lr = self._stream_lr()
        params = list(self.model_.parameters())
        built = getattr(self, "_stream_built_for", None)
        if built is not None:
            model, old_params, old_lr = built
            if model is self.model_ and old_lr == lr and len(old_params) == len(params) and all(
                a is b for a, b in zip(old_params, params)
            ):
                return self._stream_opt
        # Fused (one kernel for all tensors) where it can be: a streaming step is one small update.
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        self._stream_opt = torch.optim.Adam(params, lr=lr, weight_decay=float(self.weight_decay), fused=fused or None)
        self._stream_built_for = (self.model_, params, lr)
        self.stream_optimizer_builds_ = getattr(self, "stream_optimizer_builds_", 0) + 1
        return self._stream_opt

    def _stream_update(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        optimizer = self._stream_optimizer()
        model = self.model_
        model.train()
        try:
            pred = model(inputs)
            loss = torch.mean((pred.float() - targets) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(self.grad_clip))
            optimizer.step()
            _commit(model)
        finally:
            model.eval()
        return float(loss.detach())

    def __getstate__(self) -> dict[str, Any]:
        # The streaming optimiser is a cache of the live model: pickles and clones rebuild it.
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop("_stream_opt", None)
        state.pop("_stream_built_for", None)
        state.pop("_stream_output_for", None)
        return state
