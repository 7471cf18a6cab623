"""Storage faults met by the run CLI (``python -m psann.scripts.hisso_log_run``, docs/hisso_cli.md).

- An output folder that cannot be written (an existing read-only folder, a missing one under a
  read-only parent, a path through a regular file) is bad input: exit 2 before any work, one line
  on stderr naming ``--output-dir`` and the path, no run folder created, nothing in it touched.
- A half-written metrics.json in an existing run folder (a run killed while a non-atomic writer
  was at work, a copy cut short): the folder is never reused, the new run goes beside it
  (``<name>-1``) and the old files stay byte for byte; the results store reads the broken one as
  INCOMPLETE with the reason, and the good one as SUCCESS.

Root bypasses permission bits, so when the tests run as root the CLI runs without the capabilities
that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) for the read-only cases.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _sweep_helpers import ROOT, worker_env, write_run_config

# Every case starts the CLI in a subprocess (torch import): a few seconds each.
pytestmark = pytest.mark.slow

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
PR_CAPBSET_DROP = 24


def _snapshot(folder: Path) -> dict[str, tuple[int, float, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mode, p.stat().st_mtime, p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def _without_permission_override() -> None:
    """preexec_fn: drop the capabilities that let root ignore permission bits (root keeps its uid,
    so it can still run the interpreter under /root; after exec it lacks them)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.fixture
def read_only(tmp_path):
    """Makes folders read-only (r-x) for the test, and writable again afterwards (for cleanup).

    Skips the test where a read-only folder cannot be made to bind the CLI (root without
    CAP_SETPCAP to drop its override capabilities)."""
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    probe.chmod(0o555)
    try:
        check = subprocess.run([sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"], capture_output=True,
                               preexec_fn=_without_permission_override, timeout=60)
    except subprocess.SubprocessError as exc:
        check = exc
    probe.chmod(0o755)
    if not isinstance(check, subprocess.CompletedProcess) or check.returncode == 0:
        pytest.skip("permission bits cannot be made to apply to the CLI here")
    probe.rmdir()
    made: list[Path] = []

    def lock(folder: Path) -> Path:
        folder.chmod(0o555)
        made.append(folder)
        return folder

    yield lock
    for folder in made:
        folder.chmod(0o755)


def _run_cli(config: Path, output_dir: Path, *extra: str, unprivileged: bool = False) -> subprocess.CompletedProcess:
    env = worker_env()
    return subprocess.run(
        [sys.executable, "-m", "psann.scripts.hisso_log_run", "--config", str(config), "--output-dir", str(output_dir),
         "--device", "cpu", "--threads", "1", *extra],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
        preexec_fn=_without_permission_override if unprivileged else None,
    )


def _config(folder: Path) -> Path:
    return write_run_config(folder)


def _assert_refused(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --output-dir"), lines[0]
    assert str(path) in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_read_only_output_dir_is_refused_with_exit_2_and_nothing_in_it_touched(tmp_path, read_only):
    config = _config(tmp_path)
    output = tmp_path / "runs"
    earlier = output / "earlier-run"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"status": "success"}\n')
    (earlier / "events.csv").write_text("timestamp,event\n2026-12-02T00:00:00+00:00,run_start\n")
    read_only(output)
    before = _snapshot(output)

    result = _run_cli(config, output, "--run-name", "earlier-run", unprivileged=True)

    _assert_refused(result, output)
    assert "not writable" in result.stderr
    assert _snapshot(output) == before


def test_missing_output_dir_under_a_read_only_parent_is_refused_and_not_created(tmp_path, read_only):
    config = _config(tmp_path)
    parent = tmp_path / "locked"
    parent.mkdir()
    read_only(parent)
    output = parent / "runs" / "hisso"

    result = _run_cli(config, output, unprivileged=True)

    _assert_refused(result, output)
    assert str(parent) in result.stderr  # the folder that blocks it is named too
    assert list(parent.iterdir()) == []


def test_output_dir_through_a_regular_file_is_refused(tmp_path):
    config = _config(tmp_path)
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder\n")
    output = blocker / "hisso"

    result = _run_cli(config, output)

    _assert_refused(result, output)
    assert blocker.read_text() == "not a folder\n"


HALF_WRITTEN = '{\n  "status": "success",\n  "train_loss": -0.01,\n  "val_lo'


def test_half_written_metrics_json_is_kept_and_the_new_run_goes_beside_it(tmp_path):
    from sweeps.results import ingest_sweep, load_trials

    config = _config(tmp_path)
    output = tmp_path / "runs"
    broken = output / "tiny"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "metrics.json").write_text(HALF_WRITTEN)
    (broken / "events.csv").write_text(
        "timestamp,elapsed_seconds,event,phase,epoch,message\r\n"
        "2026-12-02T00:00:00+00:00,0.0,run_start,,,run=tiny\r\n2026-12-02T00:00:01+00:00,1.0,ep")
    before = _snapshot(broken)

    result = _run_cli(config, output, "--run-name", "tiny")

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f"success: {output / 'tiny-1'}"
    assert str(broken) in result.stderr and str(output / "tiny-1") in result.stderr  # the warning names both
    assert _snapshot(broken) == before  # never reused, never rewritten
    assert sorted(p.name for p in output.iterdir()) == ["tiny", "tiny-1"]

    # The results store reads the broken folder as INCOMPLETE, saying why, and the new one as SUCCESS.
    ingest_sweep(output)
    rows = {r["trial_id"]: r for r in load_trials(output).to_pylist()}
    assert rows["tiny-1"]["status"] == "SUCCESS"
    assert rows["tiny"]["status"] == "INCOMPLETE"
    assert "metrics.json" in rows["tiny"]["error"], rows["tiny"]["error"]
    assert _snapshot(broken) == before
