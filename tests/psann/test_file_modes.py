"""Files a run or sweep writes keep the process umask's permissions (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from psann.runlog import atomic_write_text, process_umask, shared_mode, write_json_atomic

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_process_umask_reads_without_changing_it(umask):
    assert process_umask() == umask
    assert process_umask() == umask


def test_atomic_writes_get_the_umask_mode(tmp_path, umask):
    atomic_write_text(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"a": 1})
    assert _mode(tmp_path / "a.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "b.json") == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_shared_mode_on_a_folder(tmp_path, umask):
    folder = tmp_path / "d"
    folder.mkdir(mode=0o700)
    shared_mode(folder, directory=True)
    assert _mode(folder) == 0o777 & ~umask
