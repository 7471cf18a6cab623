"""Import an object named by a path string: the one resolver behind every ``dotted.path`` option
(``estimator.target``, ``data.loader``, ``hisso.reward``, ``conditioning_builder``, and the
callables a saved estimator names).

A config that names a callable is code: loading it runs what it names. So a path is imported only
when it lies in a *trusted* namespace: this library's own (``psann``, ``sweeps``) and the modules the
user trusts from outside any file, with ``--trust MODULE`` on the run and sweep CLIs (which calls
``trust``) or the environment variable ``PSANN_TRUST=mod_a,mod_b``. ``trust`` writes the
environment variable too, so processes started afterwards (Ray's workers, trials) inherit it. The
check runs before anything is imported, and again on every attribute step, so
``psann.data.os.system`` cannot reach outside through a trusted module's imports.
"""

from __future__ import annotations

import importlib
import os
import re
import types
from typing import Any, Callable

from psann.errors import ValidationError, ValidationTypeError, short_repr

__all__ = [
    "LIBRARY_NAMESPACES",
    "TRUST_ENV",
    "UntrustedImportError",
    "import_callable",
    "import_object",
    "import_path_of",
    "is_trusted",
    "trust",
    "trusted_modules",
]

TRUST_ENV = "PSANN_TRUST"
LIBRARY_NAMESPACES = ("psann", "sweeps")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class UntrustedImportError(ImportError):
    """A path outside the trusted modules; raised before anything is imported."""


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(TRUST_ENV, "").split(",") if m.strip()]


def trusted_modules() -> tuple[str, ...]:
    """This library's namespaces plus every module trusted by ``trust`` or ``PSANN_TRUST``."""
    return tuple(dict.fromkeys([*LIBRARY_NAMESPACES, *_env_modules()]))


def trust(modules: Any, *, key: str = "--trust") -> tuple[str, ...]:
    """Trust ``modules`` (and their submodules) for import by path, in this process and its children.

    Each name must be a dotted module name (``my_rewards`` or ``lab.losses``); anything else is a
    ValidationError naming ``key``. Returns the trusted modules after the change.

    Example::

        trust(["my_lab.rewards"])    # what `--trust my_lab.rewards` does
    """
    names = [modules] if isinstance(modules, str) else list(modules)
    for name in names:
        if not isinstance(name, str) or not _MODULE_NAME.match(name):
            raise ValidationError.expected(key, "a dotted module name such as 'my_lab.rewards'", name)
    merged = list(dict.fromkeys([*_env_modules(), *names]))
    if merged:
        os.environ[TRUST_ENV] = ",".join(merged)
    return trusted_modules()


def is_trusted(name: str) -> bool:
    """Whether module (or dotted path) ``name`` lies inside a trusted namespace."""
    return any(name == t or name.startswith(t + ".") or name.startswith(t + ":") for t in trusted_modules())


def _untrusted(path: str) -> UntrustedImportError:
    first = path.partition(":")[0].split(".")[0]
    return UntrustedImportError(
        f"{short_repr(path)} is outside the trusted modules ({', '.join(trusted_modules())}); a config that "
        f"names a callable runs it, so trust its module from outside the file: --trust {first} or "
        f"{TRUST_ENV}={first}"
    )


def _check_reached(obj: Any, path: str) -> None:
    """An attribute step must not leave the trusted namespaces (a trusted module's own imports)."""
    if isinstance(obj, types.ModuleType):
        if not is_trusted(obj.__name__):
            raise _untrusted(path)
        return
    # Functions and classes say where they live; an instance (a registered strategy, a partial)
    # is the trusted module's own object.
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and not is_trusted(module):
            raise _untrusted(path)


def import_object(path: str) -> Any:
    """Import ``"pkg.mod:attr"`` or ``"pkg.mod.attr"`` (the longest importable module prefix).

    Raises ImportError naming what could not be found, and UntrustedImportError (an ImportError,
    before importing anything) for a path outside the trusted modules. A module that exists but
    fails on a missing dependency of its own is reported as that failure, not as "try a shorter
    prefix".
    """
    if not is_trusted(path):
        raise _untrusted(path)
    return _resolve(path, checked=True)


def _resolve(path: str, *, checked: bool) -> Any:
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
                if checked:
                    _check_reached(obj, path)
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
    except UntrustedImportError as exc:
        raise ValidationError(key, str(exc)) from None
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
        # Saving names an object the caller already holds: no trust needed (loading it back does).
        found = _resolve(path, checked=False)
    except ImportError as exc:
        raise ValidationError(key, f"{short_repr(obj)} does not import back from {path!r} ({exc})") from exc
    if found is not obj:
        raise ValidationError(key, f"{path!r} imports a different object than {short_repr(obj)}")
    return path
