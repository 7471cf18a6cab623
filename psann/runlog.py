"""Run-folder writers: the events.csv log, atomic JSON/YAML files, per-run log handlers.

The column set of events.csv is the run contract's (``psann.contract.EVENT_COLUMNS``,
docs/run_outputs.md), fixed so pyarrow.csv and people read it without hand parsing; rows are
written with the csv module and flushed one by one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from psann.contract import EVENT_COLUMNS

__all__ = ["EventLog", "RunLogging", "atomic_write_text", "json_safe", "write_json_atomic", "write_yaml_atomic"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy/torch scalars as Python numbers, tuples as lists.

    What every JSON file of a run or sweep goes through, so any reader can parse it.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic JSON write; NaN/inf become null so every reader can parse the file."""
    atomic_write_text(path, json.dumps(json_safe(dict(data)), indent=2, sort_keys=True) + "\n")


def write_yaml_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic YAML write (block style, keys in insertion order), values made safe as for JSON."""
    atomic_write_text(path, yaml.safe_dump(json_safe(dict(data)), sort_keys=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return str(value)


class EventLog:
    """Append-only events.csv writer; the header is written once, when the file is new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.perf_counter()
        new = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=EVENT_COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._handle.flush()

    def write(self, event: str, message: str = "", **fields: Any) -> None:
        row = {key: _cell(fields.get(key)) for key in EVENT_COLUMNS}
        row["timestamp"] = datetime.now(timezone.utc).isoformat()
        row["elapsed_seconds"] = f"{time.perf_counter() - self.started:.3f}"
        row["event"] = event
        row["message"] = message
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class RunLogging:
    """Attach a DEBUG file handler (run.log) and optionally an INFO console handler to the
    ``psann`` logger for one run, and remove exactly those handlers afterwards.

    Nothing else about logging is touched (Ray reuses worker processes: several runs in one
    process must not accumulate or clear each other's handlers).
    """

    FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

    def __init__(self, log_file: Path, *, console: bool, verbose: bool = False) -> None:
        self.logger = logging.getLogger("psann")
        self.handlers: list[logging.Handler] = []
        file_handler = logging.FileHandler(log_file)
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(self.FORMAT))
        self.handlers.append(file_handler)
        if console:
            stream = logging.StreamHandler()
            stream.setLevel(logging.DEBUG if verbose else logging.INFO)
            stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
            self.handlers.append(stream)
        self._old_level = self.logger.level

    def __enter__(self) -> "RunLogging":
        for handler in self.handlers:
            self.logger.addHandler(handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: Any) -> None:
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.logger.setLevel(self._old_level)
