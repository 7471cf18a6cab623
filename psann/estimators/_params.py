"""Parameter rules declared as data, checked in one place, with one error template."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from psann.data import COUNT_LIMIT
from psann.errors import ValidationError, is_finite_number, short_repr

__all__ = [
    "DEPRECATED",
    "Anything",
    "Bool",
    "DeviceSpec",
    "Int",
    "Learnable",
    "SineBounds",
    "NoneOr",
    "Options",
    "Real",
    "check_params",
    "warn_deprecated",
]


@dataclass(frozen=True)
class Int:
    low: int | None = None
    high: int | None = None

    def check(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        # Without an upper bound a count still stops at COUNT_LIMIT: 10**30 units is a typo, and
        # torch would refuse it only after the run started.
        high = COUNT_LIMIT if self.high is None else self.high
        return (self.low is None or value >= self.low) and value <= high

    def describe_value(self, value: Any) -> str:
        if self.high is None and isinstance(value, int) and not isinstance(value, bool) and value > COUNT_LIMIT:
            return f"an int <= {COUNT_LIMIT} (2**31 - 1)"
        return self.describe()

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"an int in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"an int >= {self.low}"
        return "an int"


@dataclass(frozen=True)
class Real:
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, value: Any) -> bool:
        if not is_finite_number(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        op = ">" if self.low_open else ">="
        parts = []
        if self.low is not None:
            parts.append(f"{op} {self.low}")
        if self.high is not None:
            parts.append(f"<= {self.high}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "")


@dataclass(frozen=True)
class Options:
    values: tuple[Any, ...]

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "a bool"


@dataclass(frozen=True)
class Anything:
    text: str = "any value"

    def check(self, value: Any) -> bool:
        return True

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class NoneOr:
    inner: Any

    def check(self, value: Any) -> bool:
        return value is None or self.inner.check(value)

    def describe(self) -> str:
        return f"None or {self.inner.describe()}"

    def describe_value(self, value: Any) -> str:
        return f"None or {_describe(self.inner, value)}"


_SINE_PARAMETERS = ("amplitude", "frequency", "decay")


@dataclass(frozen=True)
class Learnable:
    """``learnable``: 'all', 'none', one name or a list of amplitude / frequency / decay."""

    def check(self, value: Any) -> bool:
        if isinstance(value, str):
            return value.lower() in ("all", "none", *_SINE_PARAMETERS)
        if not isinstance(value, (list, tuple)):
            return False
        return all(isinstance(name, str) and name.lower() in _SINE_PARAMETERS for name in value)

    def describe(self) -> str:
        return "'all', 'none' or a list of 'amplitude', 'frequency', 'decay'"


def _is_bound(value: Any) -> bool:
    return value is None or is_finite_number(value)


@dataclass(frozen=True)
class SineBounds:
    """``activation_bounds``: None or {amplitude|frequency|decay: [low, high]}, finite or None, low <= high."""

    def check(self, value: Any) -> bool:
        if value is None:
            return True
        if not isinstance(value, Mapping):
            return False
        for name, pair in value.items():
            if name not in _SINE_PARAMETERS or not isinstance(pair, (list, tuple)) or len(pair) != 2:
                return False
            low, high = pair
            if not (_is_bound(low) and _is_bound(high)):
                return False
            if low is not None and high is not None and low > high:
                return False
        return True

    def describe(self) -> str:
        return "None or {amplitude|frequency|decay: [low, high]} with finite numbers (or null) and low <= high"


def _describe(rule: Any, value: Any) -> str:
    describe_value = getattr(rule, "describe_value", None)
    return describe_value(value) if describe_value is not None else rule.describe()


@dataclass(frozen=True)
class DeviceSpec:
    def check(self, value: Any) -> bool:
        if isinstance(value, torch.device):
            return True
        if not isinstance(value, str):
            return False
        if value == "auto":
            return True
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            return False
        return True

    def describe(self) -> str:
        return "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device"


DEPRECATED = "deprecated"  # default of a deprecated alias parameter: "not given" (sklearn's pattern)


def check_params(owner: str, constraints: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Raise ValidationError (``.key`` = the parameter) for the first parameter breaking its rule."""
    for name, rule in constraints.items():
        value = params[name]
        if not rule.check(value):
            raise ValidationError(name, f"{owner} expects {_describe(rule, value)}, got {short_repr(value)}")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """The warnings stacklevel of the first frame outside psann.estimators (the user's call).

    A fixed number is wrong for some paths: fit and validate_params sit at different depths.
    """
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        frame = frame.f_back
        level += 1
    return level


def warn_deprecated(owner: str, given: Mapping[str, str]) -> None:
    """One DeprecationWarning per deprecated alias that was given ({alias: canonical})."""
    for alias, canonical in given.items():
        warnings.warn(
            f"{owner}: {alias!r} is deprecated, use {canonical!r} instead",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
