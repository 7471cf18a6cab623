"""HISSOOptions: the episodic trainer's settings, validated once, with key paths in errors."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["HISSOOptions", "WarmStartOptions", "PRIMARY_TRANSFORMS", "AMP_DTYPES"]

PRIMARY_TRANSFORMS = ("softmax", "tanh", "identity")
AMP_DTYPES = ("float16", "bfloat16")
STATE_RESETS = ("batch", "epoch", "none")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(value: Any, key: str, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ValueError(f"{key}: expected int >= {low}, got {value!r}")


def _check_number(value: Any, key: str, low: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
        raise ValueError(f"{key}: expected a finite number >= {low}, got {value!r}")


def _unknown_keys(mapping: Mapping[str, Any], allowed: list[str], prefix: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(f"{prefix}.{key}: unknown key{suggestion}; allowed: {', '.join(allowed)}")


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
                raise ValueError(f"hisso.supervised.lr: expected a number > 0, got {self.lr!r}")
        if self.y_key is not None and not isinstance(self.y_key, str):
            raise ValueError(f"hisso.supervised.y_key: expected a dataset key string, got {self.y_key!r}")


@dataclass(frozen=True)
class HISSOOptions:
    """Settings of the HISSO episodic trainer (DESIGN.md section 3)."""

    window: int = 48  # episode length in steps (>= 2)
    batch_episodes: int = 32  # episodes per update, sampled and gathered at once
    updates_per_epoch: int = 16  # updates that make one epoch
    primary_transform: str = "softmax"  # softmax (allocations), tanh or identity
    transition_penalty: float = 0.0  # L1 penalty on action changes (alias: trans_cost)
    reward: str | Callable[..., Any] | None = None  # registry name, import path or callable
    input_noise: float = 0.0  # std of Gaussian noise added to episode inputs in training
    supervised: WarmStartOptions | None = None  # optional supervised warm start
    mixed_precision: bool = False  # autocast on CUDA
    amp_dtype: str = "float16"  # float16 (GradScaler) or bfloat16
    grad_clip: float = 1.0  # max gradient norm per update
    val_episodes: int = 64  # validation episodes (fixed seed, the same every epoch)
    eval_seed: int = 1234  # seed of the validation episodes
    state_reset: str = "batch"  # stateful models: reset state every update, epoch, or never

    def __post_init__(self) -> None:
        _check_int(self.window, "hisso.window", 2)
        _check_int(self.batch_episodes, "hisso.batch_episodes", 1)
        _check_int(self.updates_per_epoch, "hisso.updates_per_epoch", 1)
        _check_int(self.val_episodes, "hisso.val_episodes", 1)
        _check_int(self.eval_seed, "hisso.eval_seed", 0)
        if self.primary_transform not in PRIMARY_TRANSFORMS:
            raise ValueError(
                f"hisso.primary_transform: expected one of {', '.join(PRIMARY_TRANSFORMS)}, got {self.primary_transform!r}"
            )
        _check_number(self.transition_penalty, "hisso.transition_penalty")
        _check_number(self.input_noise, "hisso.input_noise")
        _check_number(self.grad_clip, "hisso.grad_clip")
        if not isinstance(self.mixed_precision, bool):
            raise ValueError(f"hisso.mixed_precision: expected true or false, got {self.mixed_precision!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"hisso.amp_dtype: expected one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}")
        if self.state_reset not in STATE_RESETS:
            raise ValueError(f"hisso.state_reset: expected one of {', '.join(STATE_RESETS)}, got {self.state_reset!r}")
        if self.reward is not None and not (isinstance(self.reward, str) or callable(self.reward)):
            raise ValueError(f"hisso.reward: expected a reward name, an import path or a callable, got {self.reward!r}")
        if self.supervised is not None and not isinstance(self.supervised, WarmStartOptions):
            raise ValueError(f"hisso.supervised: expected a mapping of warm-start options, got {self.supervised!r}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> "HISSOOptions":
        """Build from a plain dict (a run config's ``hisso`` section); ``enabled`` is ignored here."""
        data = dict(mapping or {})
        data.pop("enabled", None)
        allowed = [f.name for f in fields(cls)] + ["trans_cost"]
        _unknown_keys(data, allowed, "hisso")
        if "trans_cost" in data:
            alias = data.pop("trans_cost")
            if "transition_penalty" in data and data["transition_penalty"] != alias:
                raise ValueError(
                    f"hisso.trans_cost: conflicts with hisso.transition_penalty ({alias!r} vs {data['transition_penalty']!r}); give one"
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
        raise TypeError(f"hisso_options must be a HISSOOptions or a dict, got {type(value).__name__}")

    def with_updates(self, **changes: Any) -> "HISSOOptions":
        return replace(self, **changes)
