"""HISSOOptions: the episodic trainer's settings, validated once.

Every error is a :class:`psann.errors.ValidationError` whose ``key`` is the field's path in a run
config (``hisso.window``, ``hisso.supervised.epochs``), so a run config re-raises it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

import numpy as np

from psann.data import COUNT_LIMIT, SEED_LIMIT
from psann.errors import ValidationError, ValidationTypeError, short_repr, unknown_key

__all__ = ["HISSOOptions", "WarmStartOptions", "PRIMARY_TRANSFORMS", "AMP_DTYPES"]

PRIMARY_TRANSFORMS = ("softmax", "tanh", "identity")
AMP_DTYPES = ("float16", "bfloat16")
STATE_RESETS = ("batch", "epoch", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(value: Any, key: str, low: int, high: int = COUNT_LIMIT) -> None:
    if not _is_int(value) or value < low:
        raise ValidationError.expected(key, f"an int >= {low}", value)
    if value > high:  # 10**30 episodes is a typo; torch would refuse it only after the run started
        raise ValidationError.expected(key, f"an int in [{low}, {high}]", value)


def _check_number(value: Any, key: str, low: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValidationError.expected(key, f"a finite number >= {low}", value)


def _check_choice(value: Any, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValidationError.expected(key, f"one of {', '.join(allowed)}", value)


def _unknown_keys(mapping: Mapping[str, Any], allowed: list[str], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            shown = key if isinstance(key, str) and len(key) <= 80 else short_repr(key)  # one short error line
            raise unknown_key(shown, allowed, prefix)


@dataclass(frozen=True)
class WarmStartOptions:
    """Supervised warm start run before HISSO: fit the model on targets first."""

    y_key: str | None = "y_train"  # dataset key of the targets (run configs); estimators take y
    y: Any = None  # targets given directly (overrides y_key); one row per row of X
    epochs: int = 5  # warm-start epochs
    batch_size: int = 128  # warm-start minibatch size
    lr: float | None = None  # warm-start learning rate (None: the estimator's lr)

    def __post_init__(self) -> None:
        _check_int(self.epochs, "hisso.supervised.epochs", 1)
        _check_int(self.batch_size, "hisso.supervised.batch_size", 1)
        if self.lr is not None:
            _check_number(self.lr, "hisso.supervised.lr")
            if self.lr <= 0:
                raise ValidationError.expected("hisso.supervised.lr", "a number > 0", self.lr)
        if self.y_key is not None and not isinstance(self.y_key, str):
            raise ValidationError.expected("hisso.supervised.y_key", "a dataset key string", self.y_key)


@dataclass(frozen=True)
class HISSOOptions:
    """Settings of the HISSO episodic trainer (DESIGN.md section 3)."""

    window: int = 48  # episode length in steps (>= 2)
    batch_episodes: int = 32  # episodes per update, sampled and gathered at once
    updates_per_epoch: int = 16  # updates that make one epoch
    primary_transform: str = "softmax"  # softmax (allocations), tanh or identity
    transition_penalty: float = 0.0  # L1 penalty on action changes (alias: trans_cost)
    # registry name, import path, {target: path, kwargs: {...}} (kwargs bound) or callable
    reward: str | Mapping[str, Any] | Callable[..., Any] | None = None
    input_noise: float = 0.0  # std of Gaussian noise added to episode inputs in training
    supervised: WarmStartOptions | None = None  # optional supervised warm start
    mixed_precision: bool = False  # autocast on CUDA
    amp_dtype: str = "float16"  # float16 (GradScaler) or bfloat16
    grad_clip: float = 1.0  # max gradient norm per update
    val_episodes: int = 64  # validation episodes (fixed seed, the same every epoch)
    eval_seed: int = 1234  # seed of the validation episodes
    # Stateful models: "batch" resets the state before every update, so every episode starts from
    # the initial state (per-episode reset, the default); "epoch" or "none" carry it across updates.
    state_reset: str = "batch"

    def __post_init__(self) -> None:
        _check_int(self.window, "hisso.window", 2)
        _check_int(self.batch_episodes, "hisso.batch_episodes", 1)
        _check_int(self.updates_per_epoch, "hisso.updates_per_epoch", 1)
        _check_int(self.val_episodes, "hisso.val_episodes", 1)
        _check_int(self.eval_seed, "hisso.eval_seed", 0, SEED_LIMIT - 1)
        _check_choice(self.primary_transform, "hisso.primary_transform", PRIMARY_TRANSFORMS)
        _check_number(self.transition_penalty, "hisso.transition_penalty")
        _check_number(self.input_noise, "hisso.input_noise")
        _check_number(self.grad_clip, "hisso.grad_clip")
        if not isinstance(self.mixed_precision, bool):
            raise ValidationError.expected("hisso.mixed_precision", "true or false", self.mixed_precision)
        _check_choice(self.amp_dtype, "hisso.amp_dtype", AMP_DTYPES)
        _check_choice(self.state_reset, "hisso.state_reset", STATE_RESETS)
        if self.reward is not None and not (isinstance(self.reward, (str, Mapping)) or callable(self.reward)):
            raise ValidationError.expected(
                "hisso.reward", "a reward name, an import path, a {target, kwargs} mapping or a callable", self.reward
            )
        if self.supervised is not None and not isinstance(self.supervised, WarmStartOptions):
            raise ValidationError.expected("hisso.supervised", "a mapping of warm-start options", self.supervised)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "HISSOOptions":
        """Build from a plain dict (a run config's ``hisso`` section); ``enabled`` is ignored here."""
        if mapping is not None and not isinstance(mapping, Mapping):
            raise ValidationTypeError.expected("hisso", "a mapping of HISSO options", mapping)
        data = dict(mapping or {})
        data.pop("enabled", None)
        allowed = [f.name for f in fields(cls)] + ["trans_cost"]
        _unknown_keys(data, allowed, "hisso")
        if "trans_cost" in data and data["trans_cost"] is None:
            del data["trans_cost"]  # the earlier CLI wrote `trans_cost: null` for "not set"
        if "trans_cost" in data:
            alias = data.pop("trans_cost")
            if "transition_penalty" in data and data["transition_penalty"] != alias:
                raise ValidationError(
                    "hisso.trans_cost",
                    f"conflicts with hisso.transition_penalty ({short_repr(alias)} vs {short_repr(data['transition_penalty'])}); give one",
                )
            data["transition_penalty"] = alias
        supervised = data.get("supervised")
        if supervised is not None:
            if isinstance(supervised, Mapping):
                _unknown_keys(supervised, [f.name for f in fields(WarmStartOptions)], "hisso.supervised")
                data["supervised"] = WarmStartOptions(**supervised)
            elif supervised is False:
                data["supervised"] = None
        return cls(**data)

    @classmethod
    def coerce(cls, value: "HISSOOptions | Mapping[str, Any] | None") -> "HISSOOptions":
        if isinstance(value, cls):
            return value
        if value is None or isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise ValidationTypeError("hisso_options", f"expected a HISSOOptions or a dict, got {type(value).__name__}")

    def with_updates(self, **changes: Any) -> "HISSOOptions":
        return replace(self, **changes)
