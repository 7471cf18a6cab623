"""A full disk: a clear error, nothing written before lost or half-overwritten."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from psann import runlog
from psann.runlog import atomic_write_text, write_json_atomic

CONFIG = """
estimator: {target: psann.PSANNRegressor, params: {hidden_units: 8, epochs: 2, device: cpu}}
data: {loader: psann.scripts.hisso_log_run.toy_hisso_dataset, kwargs: {steps: 200, features: 2, seed: 0}}
hisso: {enabled: true, window: 8, batch_episodes: 2, updates_per_epoch: 1}
"""


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_atomic_write_that_hits_a_full_disk_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"status": "success", "val_loss": 0.5})
    before = target.read_bytes()
    monkeypatch.setattr(runlog.os, "fsync", _enospc)
    with pytest.raises(OSError) as info:
        atomic_write_text(target, "{\"status\": \"error\"}")
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temp file is gone


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MB tmpfs (root only); skipped where none can be mounted."""
    mount = tmp_path / "tfs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_run_on_a_full_disk_fails_in_one_line_and_the_earlier_run_is_intact(tmp_path, tiny_tmpfs):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    cli = [sys.executable, "-m", "psann.scripts.hisso_log_run", "--config", str(config), "--output-dir", str(tiny_tmpfs / "runs")]
    first = subprocess.run([*cli, "--run-name", "a"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    earlier = {p: p.read_bytes() for p in (tiny_tmpfs / "runs" / "a").rglob("*") if p.is_file()}
    with open(tiny_tmpfs / f"filler-{uuid.uuid4().hex}", "wb") as filler:  # fill the disk
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    second = subprocess.run([*cli, "--run-name", "b"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    assert {p: p.read_bytes() for p in (tiny_tmpfs / "runs" / "a").rglob("*") if p.is_file()} == earlier
    assert not (tiny_tmpfs / "runs" / "b").exists() or not any(Path(tiny_tmpfs / "runs" / "b").iterdir())
