"""The one validation error type and the one "did you mean" helper.

Every input problem found in a run config, HISSO options, a dataset, a sweep file or an estimator
parameter is a ``ValidationError``: a ``ValueError`` whose ``key`` attribute is the offending key
path (``hisso.window``, ``stages[1].scheduler.grace_period``, ``estimator.params.lr``) and whose
message follows one template::

    hisso.window: expected an int >= 2, got 'abc'

Callers read ``err.key`` and ``err.reason``; nobody parses the message text. The module is a leaf:
it imports only the standard library, so sweeps and the results store can use it without torch.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

__all__ = ["ValidationError", "ValidationTypeError", "did_you_mean", "is_finite_number", "short_repr", "unknown_key"]

_MAX_VALUE_CHARS = 80


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite as a float; an int too large for a
    float (10**400) is False rather than the OverflowError ``math.isfinite`` raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def short_repr(value: Any, limit: int = _MAX_VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a long value never floods a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ValidationError(ValueError):
    """A bad input value; ``key`` names where it is (a dotted key path), ``reason`` what is wrong.

    Example::

        raise ValidationError("hisso.window", "expected an int >= 2, got 1")
        # str(err) == "hisso.window: expected an int >= 2, got 1"; err.key == "hisso.window"
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = str(key)
        self.reason = str(reason)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours take (key, reason), not the formatted message.
        # Ray ships errors between processes, so this must round-trip.
        return (type(self), (self.key, self.reason))

    def under(self, prefix: str) -> "ValidationError":
        """The same error with its key moved under ``prefix`` (``window`` -> ``hisso.window``;
        an index key joins without a dot: ``[1].name`` -> ``stages[1].name``)."""
        if prefix and self.key:
            key = f"{prefix}{self.key}" if self.key.startswith("[") else f"{prefix}.{self.key}"
        else:
            key = prefix or self.key
        return type(self)(key, self.reason)

    @classmethod
    def expected(cls, key: str, expected: str, got: Any) -> "ValidationError":
        """The house template: ``key: expected <what>, got <value>``."""
        return cls(key, f"expected {expected}, got {short_repr(got)}")


class ValidationTypeError(ValidationError, TypeError):
    """A value of the wrong type (not a mapping, not an array, not a string), keyed like any
    ValidationError; it is also a ``TypeError`` so ``except TypeError`` callers keep working."""


def did_you_mean(name: Any, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``name`` (difflib, then a prefix match for shortened names), or None."""
    text = str(name)
    options = [str(c) for c in candidates]
    close = difflib.get_close_matches(text, options, n=1)
    if close:
        return close[0]
    # A shortened key ("grace" for "grace_period") is too short for difflib's ratio.
    prefixed = [c for c in options if text and c.startswith(text)]
    return prefixed[0] if prefixed else None


def unknown_key(key: Any, allowed: Iterable[str], prefix: str = "", *, error: type[ValidationError] = ValidationError) -> ValidationError:
    """The error for a key that is not in ``allowed``, with a did-you-mean hint and the allowed keys."""
    allowed = list(allowed)
    hint = did_you_mean(key, allowed)
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    path = f"{prefix}.{key}" if prefix else str(key)
    return error(path, f"unknown key{suggestion}; allowed: {', '.join(allowed)}")
