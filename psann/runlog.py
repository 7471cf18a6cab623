"""Run-folder writers: the events.csv log, atomic JSON/YAML files, per-run log handlers.

The column set of events.csv is the run contract's (``psann.contract.EVENT_COLUMNS``,
docs/run_outputs.md), fixed so pyarrow.csv and people read it without hand parsing; rows are
written with the csv module and flushed one by one.

Whatever a run writes is also a sign of life: ``watch_events`` lets a watchdog (the run CLI's
``--hang-timeout``, a sweep trial's heartbeat) see every events.csv row and every ``psann`` log
record written in this process, without the run knowing it is watched.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from psann.contract import EVENT_COLUMNS

__all__ = [
    "EventListener",
    "EventLog",
    "RunLogging",
    "atomic_write_text",
    "json_safe",
    "process_umask",
    "shared_mode",
    "watch_events",
    "write_json_atomic",
    "write_yaml_atomic",
]

logger = logging.getLogger(__name__)

# (event, row): the events.csv row as written (every EVENT_COLUMNS key, cells as text), or for a
# log record event "log" and a row with timestamp, event and message.
EventListener = Callable[[str, Mapping[str, str]], None]
LOG_EVENT = "log"

# The listener registry (register with watch_events): process-wide, because a run's writers do not
# know who watches them; Ray runs one trial at a time per worker process.
_listeners: list[EventListener] = []
_listeners_lock = threading.Lock()
_failed_listeners: set[int] = set()  # id() of listeners whose failure was already logged


def _notify(event: str, row: Mapping[str, str]) -> None:
    """Call every listener; a listener that raises is logged (once) and never breaks the writer."""
    for listener in tuple(_listeners):
        try:
            listener(event, row)
        except Exception:  # noqa: BLE001 - a watcher must never break the run it watches
            if id(listener) not in _failed_listeners:
                _failed_listeners.add(id(listener))
                logger.warning("event listener %r failed (ignored)", listener, exc_info=True)


class _LogRecordListener(logging.Handler):
    """Forwards ``psann`` log records (the lines of run.log) to one listener."""

    def __init__(self, listener: EventListener) -> None:
        super().__init__(level=logging.NOTSET)
        self.listener = listener

    def emit(self, record: logging.LogRecord) -> None:
        try:
            row = {
                "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "event": LOG_EVENT,
                "message": f"{record.levelname} {record.name}: {record.getMessage()}",
            }
            self.listener(LOG_EVENT, row)
        except Exception:  # noqa: BLE001 - same rule as for events rows
            if id(self.listener) not in _failed_listeners:
                _failed_listeners.add(id(self.listener))
                logger.warning("log listener %r failed (ignored)", self.listener, exc_info=True)


@contextmanager
def watch_events(listener: EventListener, *, log_records: bool = True) -> Iterator[EventListener]:
    """Call ``listener(event, row)`` after every events.csv row written in this process while inside.

    With ``log_records`` it also gets each record of the ``psann`` logger (what run.log shows) as
    event ``"log"``. The listener runs in the writing thread, so it must be cheap; an exception in
    it is logged once and ignored. Example::

        with watch_events(lambda event, row: print(event, row["epoch"])):
            execute_run(config, run_dir)
    """
    handler = _LogRecordListener(listener) if log_records else None
    with _listeners_lock:
        _listeners.append(listener)
    if handler is not None:
        logging.getLogger("psann").addHandler(handler)
    try:
        yield listener
    finally:
        if handler is not None:
            logging.getLogger("psann").removeHandler(handler)
        with _listeners_lock:
            _listeners.remove(listener)
        _failed_listeners.discard(id(listener))


_umask_lock = threading.Lock()


def process_umask() -> int:
    """The process umask, read without changing it where Linux tells (/proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def shared_mode(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain create would have had (0666 or 0777 less the umask).

    ``tempfile.mkstemp``/``mkdtemp`` create 0600 files and 0700 folders; an atomic write renames
    one into place, so without this every file of a run or sweep would be private to its writer,
    not readable by whoever shares the storage.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~process_umask())


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path through a temp file in the same folder and a rename (umask permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        shared_mode(tmp)
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
        if _listeners:
            _notify(event, row)

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
