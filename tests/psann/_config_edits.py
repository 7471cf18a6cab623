"""Edit a raw run config by dotted paths, for the config and CLI tests."""

from __future__ import annotations

import copy
from typing import Any, Mapping


def edited(raw: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``raw`` with each ``dotted.path: value`` set; a value of ``...`` deletes the key."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = result
        for part in parents:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return result
