"""--resume after the driver is interrupted mid-sweep: finished work is kept, the rest completes.

The sweep runs in a subprocess (as a user runs it) and gets SIGINT (Ctrl-C) once its first stage
has finished and, in the second stage, one trial has finished and the next has checkpointed at
least one epoch.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sweep_helpers import ROOT, epoch_rows, stage, stage_status, trial_dirs, worker_env, write_sweep

# Two driver processes, each starting its own Ray: 45 s on an idle 2-core machine, 100 s on a busy one.
pytestmark = pytest.mark.slow

SCRIPT = ROOT / "sweeps" / "hisso_wave.py"
# Long enough that the second trial is still running when the interrupt lands (it is sent as
# soon as that trial has checkpointed its first epoch; about 0.6 s per epoch).
EPOCHS = 12


def _status(trial_dir: Path) -> str | None:
    try:
        return json.loads((trial_dir / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _checkpointed(trial_dir: Path) -> bool:
    return any(p.name.startswith("checkpoint_") for p in trial_dir.iterdir()) if trial_dir.is_dir() else False


def _run_starts(trial_dir: Path) -> list[str]:
    with open(trial_dir / "events.csv", newline="") as handle:
        return [r["message"] for r in csv.DictReader(handle) if r["event"] == "run_start"]


def _snapshot(folder: Path) -> dict[str, tuple[float, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".json", ".csv", ".yaml")}


def test_resume_after_interrupt_finishes_without_rerunning_finished_trials(tmp_path):
    path = write_sweep(
        tmp_path,
        [
            stage("smoke", num_samples=1, epochs=1),
            # 0.2 s per reward call stretches each trial over a few seconds, one trial at a time.
            stage("hisso", num_samples=2, epochs=EPOCHS, max_concurrent_trials=1,
                  overrides={"hisso.reward": "_sweep_helpers:slow_reward"}),
        ],
        search_space={"estimator.params.lr": {"choice": [0.003, 0.01]}},
    )
    storage = tmp_path / "out"
    sweep_dir = storage / "r"
    command = [sys.executable, str(SCRIPT), "--sweep", str(path), "--storage", str(storage), "--num-cpus", "2"]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen([*command, "--name", "r"], stdout=log, stderr=subprocess.STDOUT, env=worker_env(),
                              cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            hisso_trials = trial_dirs(sweep_dir, "hisso")
            done = [d for d in hisso_trials if _status(d) == "success"]
            running = [d for d in hisso_trials if d not in done and _checkpointed(d)]
            if (sweep_dir / "smoke" / "stage_status.json").is_file() and done and running:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the sweep never reached the second stage's second trial:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
        driver.send_signal(signal.SIGINT)
        code = driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        log.close()
    first_log = (tmp_path / "first.log").read_text()
    assert code == 130, first_log[-3000:]
    assert "--name r --resume" in first_log
    # The interrupted stage is not marked finished.
    assert not (sweep_dir / "hisso" / "stage_status.json").exists()

    smoke_before = _snapshot(sweep_dir / "smoke")
    (finished,) = [d for d in trial_dirs(sweep_dir, "hisso") if _status(d) == "success"]
    finished_before = _snapshot(finished)
    assert epoch_rows(finished) == list(range(1, EPOCHS + 1))

    resumed = subprocess.run([*command, "--name", "r", "--resume"], capture_output=True, text=True, timeout=300,
                             env=worker_env(), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # Stage 1 was not run again: its files (status, trial folders, events) are untouched.
    assert _snapshot(sweep_dir / "smoke") == smoke_before
    # Stage 2 completed, with the trial ids it had before the interruption.
    hisso = stage_status(sweep_dir, "hisso")
    assert [t["outcome"] for t in hisso["trials"]] == ["SUCCESS", "SUCCESS"]
    assert finished.name in {t["trial_id"] for t in hisso["trials"]}
    assert len(trial_dirs(sweep_dir, "hisso")) == 2
    # The finished trial kept its files: not re-run, no duplicated epoch rows.
    assert _snapshot(finished) == finished_before
    assert _run_starts(finished) == [m for m in _run_starts(finished) if "resume=no" in m]
    # The interrupted trial continued from its checkpoint: one event log, each epoch once.
    (continued,) = [d for d in trial_dirs(sweep_dir, "hisso") if d != finished]
    assert epoch_rows(continued) == list(range(1, EPOCHS + 1))
    assert any("resume=yes" in m for m in _run_starts(continued))
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(sweep["resumed_at"]) == 1
