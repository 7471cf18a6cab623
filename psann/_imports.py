"""Import an object named by a path string: the one resolver behind every ``dotted.path`` option
(``estimator.target``, ``data.loader``, ``hisso.reward``)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object"]


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
