"""The hang rule for one run: a run that writes nothing for ``timeout_s`` is ended as hung.

"Writes" means any events.csv row or ``psann`` log line (``psann.runlog.watch_events``), the rule
operations use for a stuck job ("no new log output for N minutes"). The run CLI's
``--hang-timeout`` uses ``RunWatchdog``; sweep trials publish the same signal as heartbeats
(``sweeps.heartbeat``) and the sweep's scheduler applies the rule (``sweeps.watchdog``). The
autopsy of a hung run or trial, its last events rows one line each, is ``format_rows`` /
``last_events`` here for both.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from psann.contract import ERROR_HUNG, EXIT_HUNG, METRICS_KEYS, RUN_HUNG
from psann.runlog import LOG_EVENT, EventLog, watch_events, write_json_atomic

__all__ = ["AUTOPSY_ROWS", "RunWatchdog", "format_rows", "last_events"]

AUTOPSY_ROWS = 3  # last events.csv rows kept as a hung run's or trial's autopsy


def format_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    """Events rows as one line each: ``<timestamp> key=value ...`` without empty fields."""
    lines = []
    for row in rows:
        fields = [f"{k}={v}" for k, v in row.items() if v not in ("", None) and k != "timestamp"]
        lines.append(f"{row.get('timestamp', '')} " + " ".join(fields))
    return "\n".join(lines).strip()


def last_events(events_csv: str | None) -> str:
    """The last AUTOPSY_ROWS rows of a run's events.csv text as one line each (the autopsy)."""
    if events_csv is None:
        return "(no events.csv yet)"
    records = list(csv.DictReader(io.StringIO(events_csv)))
    if not records:
        return "(events.csv has no rows)"
    return format_rows(records[-AUTOPSY_ROWS:])


def _exit_process(code: int) -> None:
    # The main thread of a hung run is stuck in code we do not control (a reward that never
    # returns, a blocked read, a CUDA call): no exception or signal handler can be delivered to it
    # reliably, and sys.exit from this thread would only end this thread. os._exit ends the process
    # at once without running atexit handlers or flushing Python's buffers, so everything that must
    # survive (metrics.json, the events row, run.log, stdout/stderr) is written and flushed before.
    os._exit(code)


class RunWatchdog:
    """Ends the process with EXIT_HUNG when nothing is written for ``timeout_s`` seconds.

    A daemon thread compares the time of the last events.csv row or ``psann`` log record with the
    clock, which starts when the block is entered. On a hang it writes the run's files
    (metrics.json ``status: hung`` and ``error_kind: hung`` with the silence and the last events in
    ``error``, an ``error`` row in events.csv, a line in run.log), prints ``hung: <run folder>`` and
    ends the process with EXIT_HUNG. Example::

        run_dir = prepare_run_dir("runs", "smoke")
        with RunWatchdog(run_dir, 600, flag="--hang-timeout"):
            execute_run(config, run_dir)
    """

    def __init__(
        self,
        run_dir: str | Path,
        timeout_s: float,
        *,
        flag: str = "hang_timeout_s",
        check_every_s: float | None = None,
        exit_process: Callable[[int], None] = _exit_process,  # tests pass a recorder instead of os._exit
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"{flag}: expected seconds > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.flag = flag
        self.check_every_s = check_every_s if check_every_s is not None else min(1.0, self.timeout_s / 4)
        self.exit_process = exit_process
        self.run_dir = Path(run_dir)
        self.hung_after_s: float | None = None  # set when the rule fired
        self._last_output = time.monotonic()
        self._started = time.monotonic()
        self._rows: collections.deque[Mapping[str, str]] = collections.deque(maxlen=AUTOPSY_ROWS)
        self._lock = threading.Lock()  # held while deciding and while ending the run
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = None

    def _on_output(self, event: str, row: Mapping[str, str]) -> None:
        # Runs in the writing thread after every row: keep it to two assignments.
        self._last_output = time.monotonic()
        if event != LOG_EVENT:
            self._rows.append(dict(row))

    def __enter__(self) -> "RunWatchdog":
        self._last_output = self._started = time.monotonic()
        self._watch = watch_events(self._on_output)
        self._watch.__enter__()
        self._thread = threading.Thread(target=self._loop, name="psann-hang-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:  # a hang being recorded right now finishes (and ends the process) first
            self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self._watch is not None:
            self._watch.__exit__(None, None, None)
            self._watch = None

    def _loop(self) -> None:
        while not self._stopped.wait(self.check_every_s):
            silent = time.monotonic() - self._last_output
            if silent <= self.timeout_s:
                continue
            with self._lock:
                if self._stopped.is_set():
                    return
                self.hung_after_s = silent
                self._end_hung_run(silent)
            return

    def _end_hung_run(self, silent: float) -> None:
        summary = (
            f"nothing written for {silent:.1f} s ({self.flag} {self.timeout_s:g}): no events.csv row and no "
            "log line; the run was ended as hung"
        )
        autopsy = format_rows(tuple(self._rows)) or "(no events rows yet)"  # tuple(): one atomic copy
        lines = []
        try:
            self._write_run_files(summary, autopsy)
        except Exception as exc:  # noqa: BLE001 - the process must still end
            lines.append(f"error: could not record the hang in {self.run_dir}: {type(exc).__name__}: {exc}")
        lines += [f"error: {summary}; last events:\n{autopsy}", f"{RUN_HUNG}: {self.run_dir}"]
        self._say(lines)
        self.exit_process(EXIT_HUNG)

    def _write_run_files(self, summary: str, autopsy: str) -> None:
        run_dir = self.run_dir
        events = EventLog(run_dir / "events.csv")  # appends: the header is already there
        try:
            events.write("error", message=f"hung: {summary}")
        finally:
            events.close()
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())  # the last epoch's snapshot
        except (OSError, ValueError):
            metrics = {}
        if not isinstance(metrics, dict):
            metrics = {}
        metrics = {**dict.fromkeys(METRICS_KEYS), **metrics}
        metrics["run_name"] = metrics.get("run_name") or run_dir.name
        metrics.update(
            status=RUN_HUNG,
            error_kind=ERROR_HUNG,
            error=f"{summary}. Last events:\n{autopsy}",
            duration_seconds=time.monotonic() - self._started,
        )
        write_json_atomic(run_dir / "metrics.json", metrics)
        # run.log directly, not through logging: a handler lock may be held by the hung thread.
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]  # logging's asctime format
        with open(run_dir / "run.log", "a") as handle:
            handle.write(f"{stamp} ERROR psann.watchdog: {summary}; last events:\n{autopsy}\n")
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def _say(lines: list[str]) -> None:
        """Print the outcome (stderr, then the CLI's last stdout line), giving up after 2 s.

        The hung thread may hold a stream's lock or block on a full pipe; the files are already
        written, so a blocked print must not keep the process alive.
        """

        def speak() -> None:
            *errors, last = lines
            for line in errors:
                print(line, file=sys.stderr, flush=True)
            print(last, flush=True)

        speaker = threading.Thread(target=speak, name="psann-hang-report", daemon=True)
        speaker.start()
        speaker.join(2.0)
