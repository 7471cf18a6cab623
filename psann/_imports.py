"""Import an object named by a path string: the one resolver behind every ``dotted.path`` option
(``estimator.target``, ``data.loader``, ``hisso.reward``)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from psann.errors import ValidationError, ValidationTypeError, short_repr

__all__ = ["import_callable", "import_object", "import_path_of"]


def import_object(path: str) -> Any:
    """Import ``"pkg.mod:attr"`` or ``"pkg.mod.attr"`` (the longest importable module prefix).

    Raises ImportError naming what could not be found. A module that exists but fails on a missing
    dependency of its own is reported as that failure, not as "try a shorter prefix".
    """
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        candidates = [(module_name, attr_path)]
    else:
        parts = path.split(".")
        candidates = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    last_error: Exception | None = None
    for module_name, attr_path in candidates:
        if not module_name or not attr_path:
            continue
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                last_error = exc
                continue
            raise
        try:
            for attr in attr_path.split("."):
                obj = getattr(obj, attr)
        except AttributeError as exc:
            last_error = exc
            continue
        return obj
    raise ImportError(str(last_error) if last_error else f"not an import path: {path!r}")


def import_callable(path: Any, key: str) -> Callable[..., Any]:
    """Import the callable a config names at ``key`` (``data.loader``): ``"pkg.mod.func"`` or
    ``"pkg.mod:func"``.

    Raises ValidationTypeError (key ``key``) when ``path`` is not a string, and ValidationError when
    it is not an import path, cannot be imported, or names something that is not callable.
    """
    if not isinstance(path, str):
        raise ValidationTypeError.expected(key, "an import path such as 'package.module.function'", path)
    path = path.strip()
    if "." not in path.replace(":", "."):
        raise ValidationError.expected(key, "an import path such as 'package.module.function'", path)
    try:
        obj = import_object(path)
    except ImportError as exc:
        raise ValidationError(key, f"cannot import {short_repr(path)} ({exc})") from exc
    if not callable(obj):
        raise ValidationError(key, f"{short_repr(path)} is a {type(obj).__name__}, not a callable")
    return obj


def import_path_of(obj: Any, key: str) -> str:
    """The ``"pkg.mod:qualname"`` path that imports back to ``obj`` (how saved models name callables).

    Raises ValidationError (key ``key``) for objects no path reaches: lambdas, nested functions,
    callables defined in ``__main__`` or instances.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        raise ValidationError(
            key,
            f"{short_repr(obj)} cannot be saved by import path; use a module-level function and pass it "
            "(or its path 'package.module:function')",
        )
    path = f"{module}:{qualname}"
    try:
        found = import_object(path)
    except ImportError as exc:
        raise ValidationError(key, f"{short_repr(obj)} does not import back from {path!r} ({exc})") from exc
    if found is not obj:
        raise ValidationError(key, f"{path!r} imports a different object than {short_repr(obj)}")
    return path
