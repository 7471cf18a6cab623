"""One ingest of a sweep at a time on local storage: an OS-level lock on ``tables/.ingest.lock``.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the process ends,
however it ends: a crashed or killed ingest never leaves a lock that blocks the next one, and the
file itself may stay (it is hidden, and readers of the tables ignore it). Object stores have no
such lock: there the rule is one ingest at a time, the last writer wins, and each partition is
still swapped in whole (docs/results.md, "Atomic").
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; the object-store rule applies
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

LOCK_FILE = ".ingest.lock"
DEFAULT_LOCK_TIMEOUT_S = 300.0  # a large sweep's ingest takes tens of seconds
_POLL_S = 0.1


class IngestLockedError(TimeoutError):
    """Another ingest of the same sweep held the lock for longer than the timeout.

    ``path`` is the lock file; ``holder`` the process id written in it (None when unknown).
    """

    def __init__(self, path: str, timeout_s: float, holder: int | None) -> None:
        who = f"process {holder}" if holder is not None else "another process"
        super().__init__(
            f"another ingest of this sweep ({who}) holds {path}; waited {timeout_s:g} s. Let it "
            f"finish and run ingest again, or wait longer with --lock-timeout SECONDS (the lock "
            f"goes away by itself when that process ends; never delete the file by hand)"
        )
        self.path = path
        self.holder = holder


@contextlib.contextmanager
def ingest_lock(tables_dir: str, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the sweep's ingest lock (local folder ``tables_dir``), waiting up to ``timeout_s``.

    Raises IngestLockedError when another process still holds it after ``timeout_s`` (0: at once).
    """
    if fcntl is None:
        yield
        return
    os.makedirs(tables_dir, exist_ok=True)
    path = os.path.join(tables_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IngestLockedError(path, timeout_s, _holder(fd)) from None
                if not waited:
                    logger.info("waiting for another ingest of %s (lock %s)", tables_dir, path)
                    waited = True
                time.sleep(_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None
