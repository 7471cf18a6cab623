"""Folder names and output folders a user gives: checked before any work, errors keyed by the flag.

One rule for every name that becomes a folder (a run's ``--run-name``, a sweep's ``--name`` and
``name:``, a stage's ``name:``): one path component, so it can never escape its parent folder.

- not empty, not ``.`` or ``..``, no leading dot (hidden folders are the runner's own: staging,
  backups, lock files);
- no ``/``, ``\\`` or NUL, no control characters;
- at most ``NAME_MAX`` bytes in UTF-8 (255 on the common filesystems; the folder's own limit where
  the OS tells it).

Example::

    check_folder_name("wave-lr3", "--run-name")      # returns "wave-lr3"
    check_folder_name("../x", "--run-name")          # ValidationError: --run-name: expected ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from psann.errors import ValidationError, short_repr

__all__ = ["NAME_MAX", "check_folder_name", "check_output_dir"]

NAME_MAX = 255


def _name_max(parent: Path | None) -> int:
    probe = parent
    while probe is not None and not _exists(probe):
        probe = probe.parent if probe.parent != probe else None
    if probe is not None:
        try:
            return int(os.pathconf(probe, "PC_NAME_MAX"))
        except (OSError, ValueError, AttributeError):
            pass
    return NAME_MAX


def check_folder_name(value: Any, key: str, *, parent: str | os.PathLike | None = None, reserve: int = 0) -> str:
    """``value`` when it is a valid folder name (see the module docstring), else a ValidationError.

    ``reserve`` bytes are kept free for suffixes the caller may add (``-1``, a timestamp).
    """
    expected = "a folder name: one path component without '/', '\\\\' or a leading '.'"
    if not isinstance(value, str):
        raise ValidationError.expected(key, expected, value)
    if value in ("", ".", "..") or value.startswith(".") or any(c in value for c in "/\\\0"):
        raise ValidationError.expected(key, expected, value)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(key, f"expected a folder name without control characters, got {short_repr(value)}")
    limit = _name_max(Path(parent) if parent is not None else None) - reserve
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ValidationError(key, f"expected a folder name of at most {limit} bytes, got {size} bytes ({short_repr(value, 40)})")
    return value


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG and the like: nothing is there
        return False


def check_output_dir(path: str | os.PathLike, key: str) -> Path:
    """``path`` as a Path when a folder can be created or written there, else a ValidationError.

    An existing path must be a writable folder; a missing one needs its nearest existing ancestor to
    be a writable folder (it is created later, when the work starts).
    """
    path = Path(path)
    probe = path
    while not _exists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "" if probe == path else f" ({probe} is in its path)"
        raise ValidationError(key, f"{path} is not a folder{where}; expected a folder to write into")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (its existing parent {probe})"
        raise ValidationError(key, f"{path}{where} is not writable by this user")
    for part in path.parts[len(probe.parts):]:  # the folders still to be created
        if len(part.encode("utf-8", "surrogatepass")) > _name_max(probe):
            raise ValidationError(key, f"{short_repr(part, 40)} in {path} is longer than the filesystem allows")
    return path
