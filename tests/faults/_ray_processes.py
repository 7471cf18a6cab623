"""Find and end the Ray processes one test started, and only those.

Every process a test starts (a sweep driver, the Ray head it embeds, the raylet, gcs_server and
workers those spawn) inherits the environment, so a variable with a value unique to the test,
``PSANN_FAULT_MARKER``, tags them all; /proc/<pid>/environ shows it whatever the process is named.
Other sessions' Ray processes on the same machine never carry it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable, TypeVar

MARKER = "PSANN_FAULT_MARKER"
T = TypeVar("T")


def new_marker() -> str:
    return f"fault-{uuid.uuid4().hex}"


def marked_processes(marker: str) -> dict[int, str]:
    """pid -> command line of the live processes (zombies excluded) tagged with ``marker``, except this one."""
    needle = f"{MARKER}={marker}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = cmdline[:200]
    return found


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy; TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def wait_gone(marker: str, timeout_s: float) -> dict[int, str]:
    """Wait until no process carries ``marker``; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = marked_processes(marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def kill_marked(marker: str, timeout_s: float = 20.0) -> dict[int, str]:
    """SIGKILL every process carrying ``marker`` (by pid) until none is left; returns the ones killed."""
    killed: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    while (alive := marked_processes(marker)) and time.monotonic() < deadline:
        for pid, cmdline in alive.items():
            try:
                os.kill(pid, signal.SIGKILL)
                killed[pid] = cmdline
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return killed
