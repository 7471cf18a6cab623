"""A trial restores from the newest complete checkpoint in its trial folder, listed by Tune or not.

No Ray here: the trial folder is a local folder, or the same behind a pyarrow filesystem that is
not a LocalFileSystem (so checkpoints are copied, as from an object store), and Tune's calls are
stood in for. tests/faults/test_driver_loss.py runs the same path under a SIGKILLed driver.
"""

from __future__ import annotations

import csv
import io
import types
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

from psann.training import TrainingSnapshot
from sweeps import trainable
from sweeps.trainable import CHECKPOINT_MANIFEST, TRAINING_STATE, find_restore_point, staging_folder

HEADER = "event,epoch,message\r\n"


def _events(*epochs: int, start: str = "resume=no") -> str:
    return HEADER + f"run_start,,{start}\r\n" + "".join(f"epoch,{e},\r\n" for e in epochs)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _text_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _write_checkpoint(trial: Path, index: int, epoch: int, *, written_at: float | None = None) -> Path:
    """A checkpoint folder as TuneReporter._report stages it: state, run files, manifest last."""
    folder = trial / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    snapshot = TrainingSnapshot(phase="hisso", model={"w": torch.full((3,), float(epoch))},
                                loop={"epoch": epoch, "history": []}, phase_state={})
    torch.save(snapshot.to_dict(), folder / TRAINING_STATE)
    (folder / "events.csv").write_text(_events(*range(1, epoch + 1)))
    (folder / "best").mkdir()
    (folder / "best" / "model.pt").write_bytes(b"best weights %d" % epoch)
    trainable._write_manifest(folder, epoch=epoch, written_at=written_at if written_at is not None else float(index))
    return folder


def _folder(root: Path, remote: bool) -> trainable._TrialFolder:
    if remote:  # not a LocalFileSystem: read as an object store is, through copies
        return trainable._TrialFolder(pafs.SubTreeFileSystem(str(root.parent), pafs.LocalFileSystem()), root.name)
    return trainable._TrialFolder(pafs.LocalFileSystem(), str(root))


def _epoch(folder: Path) -> int:
    return TrainingSnapshot.from_dict(torch.load(folder / TRAINING_STATE, weights_only=True)).epoch


@pytest.mark.parametrize("remote", [False, True])
def test_newest_complete_checkpoint_wins_and_a_half_written_one_is_skipped(tmp_path, remote):
    trial = tmp_path / "trial"
    _write_checkpoint(trial, 0, 2)
    _write_checkpoint(trial, 1, 4)
    cut = _write_checkpoint(trial, 2, 6)
    (cut / TRAINING_STATE).write_bytes((cut / TRAINING_STATE).read_bytes()[:40])  # killed mid-upload
    folder = find_restore_point(_folder(trial, remote), tmp_path / "scratch")
    assert folder is not None and folder.name == "checkpoint_000001" and _epoch(folder) == 4
    assert (folder.parent == tmp_path / "scratch") is remote


def test_checkpoint_without_its_manifest_or_missing_a_file_is_never_picked(tmp_path):
    trial = tmp_path / "trial"
    no_manifest = _write_checkpoint(trial, 0, 2)
    (no_manifest / CHECKPOINT_MANIFEST).unlink()
    missing = _write_checkpoint(trial, 1, 4)
    (missing / "best" / "model.pt").unlink()
    cut_manifest = _write_checkpoint(trial, 2, 6)
    text = (cut_manifest / CHECKPOINT_MANIFEST).read_text()
    (cut_manifest / CHECKPOINT_MANIFEST).write_text(text[: len(text) // 2])
    assert find_restore_point(_folder(trial, False), tmp_path / "scratch") is None


def test_checkpoint_tune_listed_is_the_fallback_when_no_folder_has_a_manifest(tmp_path):
    trial = tmp_path / "trial"
    listed = _write_checkpoint(trial, 0, 2)
    (listed / CHECKPOINT_MANIFEST).unlink()  # written before checkpoints had manifests
    tune_checkpoint = types.SimpleNamespace(filesystem=pafs.LocalFileSystem(), path=str(listed))
    assert find_restore_point(_folder(trial, False), tmp_path / "scratch", tune_checkpoint) == listed


def test_later_epoch_wins_over_higher_folder_index(tmp_path):
    # A resumed trial numbers checkpoints on from Tune's saved state: a lower index can be newer.
    trial = tmp_path / "trial"
    _write_checkpoint(trial, 4, 16, written_at=200.0)
    _write_checkpoint(trial, 5, 12, written_at=100.0)
    assert find_restore_point(_folder(trial, False), tmp_path / "scratch").name == "checkpoint_000004"


@pytest.mark.parametrize("remote", [False, True])
def test_new_working_folder_continues_from_an_unlisted_checkpoint_and_keeps_the_killed_attempt(
        tmp_path, monkeypatch, remote):
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)  # Tune's saved state lists none
    trial = tmp_path / "trial"
    _write_checkpoint(trial, 0, 2)
    cut = _write_checkpoint(trial, 1, 4)
    (cut / "events.csv").unlink()  # the killed report's upload never finished
    killed_log = _events(1, 2, 3)
    (trial / "events.csv").write_bytes(killed_log.encode())
    (trial / "metrics.json").write_text('{"status": "running"}')
    run_dir = tmp_path / "session" / "working_dirs" / "trial"
    run_dir.mkdir(parents=True)
    staging_folder(run_dir).mkdir()  # left by the killed attempt's report in this working folder

    state = trainable._start_attempt(_folder(trial, remote), run_dir, "cpu")

    assert state is not None and state.epoch == 2
    assert _rows(run_dir / "events.csv") == _text_rows(_events(1, 2))
    assert (run_dir / "attempts" / "1" / "events.csv").read_bytes() == killed_log.encode()
    # The trial folder holds the same: the killed attempt kept whole, the log cut at the checkpoint.
    assert (trial / "attempts" / "1" / "events.csv").read_bytes() == killed_log.encode()
    assert _rows(trial / "events.csv") == _text_rows(_events(1, 2))
    assert (trial / "metrics.json").exists()  # the checkpoint had none: not set aside
    assert not staging_folder(run_dir).exists()


def test_attempt_without_a_checkpoint_sets_the_earlier_files_aside_in_the_trial_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    trial = tmp_path / "trial"
    (trial / "checkpoints" / "best").mkdir(parents=True)
    (trial / "checkpoints" / "best" / "model.pt").write_bytes(b"old")
    (trial / "events.csv").write_text(_events(1))
    (trial / "attempts" / "1").mkdir(parents=True)  # an earlier failure's files
    run_dir = tmp_path / "session" / "trial"
    run_dir.mkdir(parents=True)

    assert trainable._start_attempt(_folder(trial, False), run_dir, "cpu") is None

    assert sorted(p.name for p in (run_dir / "attempts").iterdir()) == ["1", "2"]
    assert _rows(trial / "attempts" / "2" / "events.csv") == _text_rows(_events(1))
    assert (trial / "attempts" / "2" / "checkpoints" / "best" / "model.pt").read_bytes() == b"old"
    assert not (trial / "events.csv").exists() and not (trial / "checkpoints").exists()
    assert not (run_dir / "events.csv").exists()


def test_working_folder_with_files_is_not_overwritten_from_the_trial_folder(tmp_path):
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "events.csv").write_text(_events(1))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "events.csv").write_text(_events(1, 2))  # a restart on the same node: newer here
    assert trainable._pull_run_files(_folder(trial, False), run_dir) == []
    assert _rows(run_dir / "events.csv") == _text_rows(_events(1, 2))


def test_report_replaces_an_unlisted_checkpoint_in_the_folder_tune_writes_next(tmp_path, monkeypatch):
    trial = tmp_path / "trial"
    listed = _write_checkpoint(trial, 1, 2)
    unlisted = _write_checkpoint(trial, 2, 6)
    storage = types.SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(trial),
                                    current_checkpoint_index=1)
    monkeypatch.setattr(trainable.tune, "get_context", lambda: types.SimpleNamespace(get_storage=lambda: storage))
    trainable._clear_next_checkpoint_folder()
    assert listed.is_dir() and not unlisted.exists()  # no file of epoch 6 left to mix with the next
    trainable._clear_next_checkpoint_folder()  # nothing there: nothing to do
    assert listed.is_dir()


def test_staging_folder_is_beside_the_working_folder_not_in_it():
    run_dir = Path("/ray/session/artifacts/t/hisso/working_dirs/hisso_00001")
    staging = staging_folder(run_dir)
    assert staging.parent == run_dir.parent and staging.name.startswith(".hisso_00001")
