"""Stateful PSANN layers: a per-feature persistent gain that follows each sine layer's activity.

A ``StateController`` holds one state value ``s_j`` per feature (initially ``init``). Its forward
multiplies the activations by the state, broadcast along the feature axis, and stages the next
state from the output's activity::

    out = y * s
    m_j = mean over every axis but the feature axis of |y * s|_j
    s'_j = max_abs * tanh((rho * s_j + (1 - rho) * beta * m_j) / max_abs)

The staged value becomes the state only on ``commit()``, which the training loop calls after each
optimiser step (the forward's graph holds the old state until backward has run, so the state is
never changed between a forward and its backward). ``reset()`` refills the state, by default with
its current mean; ``reset_to_init()`` refills it with ``init``. See docs/stateful.md.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import nn

from psann.errors import ValidationError, ValidationTypeError, is_finite_number, unknown_key

__all__ = ["StateConfig", "StateController"]

SATURATION_FRACTION = 0.98  # warn once when |s| reaches this fraction of max_abs
COLLAPSE_MEAN = 1e-3  # warn once when the mean state magnitude falls below this
_ACCELERATOR_CHECK_EVERY = 64  # commits between warning checks off the CPU (each check is a host read)


def _is_real(value: Any) -> bool:
    return is_finite_number(value)


@dataclass(frozen=True)
class StateConfig:
    """Options of the state controllers a stateful network puts after each sine layer."""

    rho: float = 0.95  # persistence of the state per update, in [0, 1)
    beta: float = 1.0  # gain on the mean activity m that drives the state, >= 0
    init: float = 1.0  # initial (and reset_to_init) value of every state entry, finite
    max_abs: float = 5.0  # soft bound: the state stays in (-max_abs, max_abs) through tanh, > 0
    detach: bool = True  # the forward uses a detached state (no gradient into the state tensor)

    def __post_init__(self) -> None:
        if not _is_real(self.rho) or not 0.0 <= self.rho < 1.0:
            raise ValidationError.expected("rho", "a finite number in [0, 1)", self.rho)
        if not _is_real(self.beta) or self.beta < 0.0:
            raise ValidationError.expected("beta", "a finite number >= 0", self.beta)
        if not _is_real(self.init):
            raise ValidationError.expected("init", "a finite number", self.init)
        if not _is_real(self.max_abs) or self.max_abs <= 0.0:
            raise ValidationError.expected("max_abs", "a finite number > 0", self.max_abs)
        if not isinstance(self.detach, bool):
            raise ValidationError.expected("detach", "true or false", self.detach)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON values), what ``from_mapping`` reads back."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, key: str = "state") -> "StateConfig":
        """Build from a plain dict; errors are keyed under ``key`` (``state.rho``)."""
        allowed = [f.name for f in fields(cls)]
        for name in mapping:
            if name not in allowed:
                raise unknown_key(name, allowed, key)
        try:
            return cls(**dict(mapping))
        except ValidationError as err:
            raise err.under(key) from None

    @classmethod
    def coerce(cls, value: "StateConfig | Mapping[str, Any] | None", *, key: str = "state") -> "StateConfig | None":
        """None, a StateConfig or a mapping of its fields -> None or a StateConfig."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value, key=key)
        raise ValidationTypeError.expected(key, "None, a psann.StateConfig or a mapping of its fields", value)


class StateController(nn.Module):
    """One persistent state value per feature, applied as a gain after a sine layer.

    Args:
        features: the size of the feature axis (one state entry per feature).
        config: the controller's options (``StateConfig()`` by default).
        feature_dim: the feature axis of the inputs ``forward`` sees (-1 for (N, F) rows, 1 for
            channels-first (N, C, *) maps); ``apply`` takes it per call.

    Example::

        ctrl = StateController(4, StateConfig(rho=0.9))
        out = ctrl.apply(torch.randn(8, 4), feature_dim=-1)   # y * s, stages s'
        ctrl.commit()                                        # s <- s'
    """

    def __init__(self, features: int, config: StateConfig | None = None, *, feature_dim: int = -1) -> None:
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValidationError.expected("features", "an int >= 1", features)
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int):
            raise ValidationError.expected("feature_dim", "an int axis (negative axes allowed)", feature_dim)
        if config is not None and not isinstance(config, StateConfig):
            raise ValidationTypeError.expected("config", "a psann.StateConfig or None", config)
        self.features = features
        self.config = config or StateConfig()
        self.feature_dim = feature_dim
        self.register_buffer("state", torch.full((features,), float(self.config.init)))
        self._staged: torch.Tensor | None = None
        self._commits = 0
        self.warned_saturation = False
        self.warned_collapse = False

    # -- the forward ------------------------------------------------------------------------------
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.apply(y, self.feature_dim, update=True)

    def apply(self, y: torch.Tensor, feature_dim: int = -1, update: bool = True) -> torch.Tensor:  # type: ignore[override]
        """Return ``y * s`` (s broadcast along ``feature_dim``); with ``update``, stage the next state.

        ``apply(fn)`` with a callable keeps ``nn.Module.apply``'s meaning (a parent's traversal).
        """
        if not isinstance(y, torch.Tensor):
            if callable(y):  # a parent's model.apply(fn) traversal reaches here: keep nn.Module's meaning
                return nn.Module.apply(self, y)
            raise ValidationTypeError.expected("y", "a torch.Tensor", y)
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or not -y.dim() <= feature_dim < y.dim():
            raise ValidationError.expected(
                "feature_dim", f"an axis in [{-y.dim()}, {y.dim() - 1}] for y of shape {tuple(y.shape)}", feature_dim
            )
        axis = feature_dim % y.dim()
        if y.shape[axis] != self.features:
            raise ValidationError(
                "y", f"expected {self.features} features on axis {feature_dim}, got shape {tuple(y.shape)}"
            )
        state = self.state.detach() if self.config.detach else self.state
        shape = [1] * y.dim()
        shape[axis] = self.features
        out = y * state.to(y.dtype).view(shape)
        if update:
            with torch.no_grad():
                reduce = tuple(d for d in range(y.dim()) if d != axis)
                activity = out.detach().abs().float().mean(dim=reduce) if reduce else out.detach().abs().float()
                self._staged = self._next_state(self.state.detach().float(), activity).to(self.state.dtype)
        return out

    def _next_state(self, state: torch.Tensor, activity: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        drive = cfg.rho * state + (1.0 - cfg.rho) * cfg.beta * activity
        return cfg.max_abs * torch.tanh(drive / cfg.max_abs)

    # -- state changes outside the forward --------------------------------------------------------
    @property
    def staged(self) -> torch.Tensor | None:
        """The value the next ``commit()`` writes (None when nothing is staged)."""
        return self._staged

    @torch.no_grad()
    def commit(self) -> None:
        """Make the staged state current (after the optimiser step); a no-op when nothing is staged.

        A staged entry that is not finite (a skipped mixed-precision step) keeps its current value.
        """
        staged, self._staged = self._staged, None
        if staged is None:
            return
        staged = staged.to(self.state.device, self.state.dtype)
        self.state.copy_(torch.where(torch.isfinite(staged), staged, self.state))
        self._commits += 1
        if self.state.device.type == "cpu" or self._commits % _ACCELERATOR_CHECK_EVERY == 0:
            self.check_warnings()

    @torch.no_grad()
    def reset(self, value: Any = None) -> None:
        """Refill the state with ``value`` (a number, or one per feature), by default its current mean."""
        if value is None:
            self.state.fill_(self.state.mean())  # stays on the device: no host read
        elif _is_real(value):
            self.state.fill_(float(value))
        elif isinstance(value, (list, tuple)) and len(value) == self.features and all(_is_real(v) for v in value):
            self.state.copy_(torch.tensor([float(v) for v in value], dtype=self.state.dtype))
        elif (
            isinstance(value, torch.Tensor)
            and tuple(value.shape) in ((), (self.features,))
            and value.dtype.is_floating_point
            and bool(torch.isfinite(value).all())
        ):
            self.state.copy_(value.to(self.state.device, self.state.dtype).expand(self.features))
        else:
            raise ValidationError.expected("value", f"None, a finite number or {self.features} finite numbers", value)
        self._staged = None

    @torch.no_grad()
    def reset_to_init(self) -> None:
        """Refill the state with ``config.init`` (what a stateful model's ``reset_state()`` does)."""
        self.state.fill_(float(self.config.init))
        self._staged = None

    def check_warnings(self) -> None:
        """Warn (once each) when |s| reached 98% of max_abs or the mean |s| fell below 1e-3.

        ``commit()`` calls this after every commit on the CPU and every 64th elsewhere, so a GPU
        update loop does not wait for the host each step.
        """
        if self.warned_saturation and self.warned_collapse:
            return
        peak, mean = torch.stack([self.state.abs().max(), self.state.abs().mean()]).float().tolist()
        limit = SATURATION_FRACTION * self.config.max_abs
        if not self.warned_saturation and peak >= limit:
            self.warned_saturation = True
            warnings.warn(
                f"StateController state reached |s| = {peak:.4g} >= {SATURATION_FRACTION:.0%} of max_abs "
                f"{self.config.max_abs}: it is saturating; lower beta or raise max_abs",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self.warned_collapse and mean < COLLAPSE_MEAN:
            self.warned_collapse = True
            warnings.warn(
                f"StateController mean |state| fell to {mean:.3g} < {COLLAPSE_MEAN}: the layer's output is "
                "vanishing; raise beta or rho, or reset the state more often",
                RuntimeWarning,
                stacklevel=2,
            )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"features={self.features}, feature_dim={self.feature_dim}, rho={c.rho}, beta={c.beta}, "
            f"init={c.init}, max_abs={c.max_abs}, detach={c.detach}"
        )
