"""Reading a config file (run config or sweep file): the one strict YAML/JSON reader.

Every problem with the file itself is a ``ValidationError`` whose key is the file (or, for a bad
value, the key path inside it), raised before anything else is read:

- the path is missing, a directory, or not a regular file;
- the bytes are not UTF-8 (the error gives the byte offset);
- the text is not YAML (JSON is YAML) or, for ``.json`` files, not JSON;
- a tag that would construct Python objects (``!!python/...``): ``yaml.SafeLoader`` knows none;
- a key given twice in one mapping (PyYAML would keep the last one silently);
- a non-finite number (``.nan``, ``.inf``): no setting of this project takes one.

Example::

    raw = read_config("configs/hisso/dense_cpu_smoke.yaml")   # a dict
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from psann.errors import ValidationError, short_repr

__all__ = ["MAX_CONFIG_BYTES", "read_config"]

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a few KB; this bounds what a stray path can cost


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a plain value, got {short_repr(key)}", key_node.start_mark
            ) from None
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark)
        seen[key] = True
    return loader.construct_mapping(node, deep=True)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(f"duplicate key {short_repr(key)}")
        self.key = key
        self.mark = mark


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _duplicate_json_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key, None)
        result[key] = value
    return result


def _path_of(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _check_finite(value: Any, prefix: str, source: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(prefix or source, f"expected a finite number, got {value!r} (in {source})")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, _path_of(prefix, key), source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, _path_of(prefix, index), source)


def _line(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def read_config(path: str | os.PathLike, *, what: str = "config") -> Any:
    """Parse the YAML or JSON file at ``path`` strictly (see the module docstring); any value."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ValidationError(source, f"{what} file not found")
    if path.is_dir():
        raise ValidationError(source, f"is a directory; expected a {what} file (YAML or JSON)")
    if not path.is_file():
        raise ValidationError(source, f"is not a regular file; expected a {what} file (YAML or JSON)")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValidationError(source, f"is {size} bytes; a {what} file is at most {MAX_CONFIG_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(source, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(source, f"is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None
    is_json = path.suffix.lower() == ".json"
    try:
        if is_json:
            value = json.loads(text, object_pairs_hook=_duplicate_json_keys)
        else:
            value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ValidationError(source, f"duplicate key {short_repr(exc.key)}{_line(exc.mark)}: each key once per mapping") from None
    except (yaml.YAMLError, ValueError) as exc:
        kind = "JSON" if is_json else "YAML"
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(source, f"not valid {kind}{_line(mark)}: {problem}") from None
    _check_finite(value, "", source)
    return value
