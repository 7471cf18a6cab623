"""A trial's checkpoints and files in its trial folder: what a report stages, what a restart restores.

Each checkpoint carries a manifest (every file's size and SHA-256, written last), so a trial can
also restore from a ``checkpoint_*`` folder Tune's saved experiment state does not list (its driver
was SIGKILLed between two saves): the newest folder whose manifest checks out is used, a folder cut
short by the kill never is.

A trial restarted in an empty working folder first pulls the earlier attempt's run files from the
trial folder; files a restart does not continue are set aside under attempts/N/, in the working
folder and the trial folder alike (nothing a trial wrote is ever deleted). ``sweeps.trainable``
calls ``_start_attempt`` when a trial starts and ``_stage_checkpoint`` at each report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pyarrow.fs as pafs
import torch
from ray import tune

from psann.training import TrainingSnapshot

__all__ = ["TRAINING_STATE", "CHECKPOINT_MANIFEST", "find_restore_point", "staging_folder", "cut_events"]

logger = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
CHECKPOINT_MANIFEST = "checkpoint_manifest.json"  # written last: {format, epoch, written_at, files: {path: {size, sha256}}}
_MANIFEST_FORMAT = 1
_CARRIED_FILES = ("events.csv", "config_resolved.yaml", "metrics.json")
_RUN_FILES = ("metrics.json", "events.csv", "config_resolved.yaml", "run.log", "checkpoints")
_ATTEMPTS = "attempts"
_CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6}")  # Ray's StorageContext._make_checkpoint_dir_name


def staging_folder(run_dir: Path) -> Path:
    """Where a trial stages each report's checkpoint: beside its working folder, named after it.

    Not in the system temp folder, where a trial killed inside a report would leave it for good,
    and not inside the working folder, which Tune uploads to the trial folder at every report. It
    is wiped at each report and when the trial starts in that working folder again, and otherwise
    goes with the working folder (Ray's session folder).
    """
    return run_dir.parent / f".{run_dir.name}.checkpoint-staging"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path, *, epoch: int, written_at: float) -> None:
    """Write a staged checkpoint's manifest, last: the size and SHA-256 of every other file in it.

    Tune uploads a checkpoint's files in no set order, so a trial killed inside a report can leave
    any subset of them, the manifest included, or a file cut short; only a folder whose manifest
    reads and whose files all match it is complete (``_manifest_matches``).
    """
    files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != CHECKPOINT_MANIFEST}
    manifest = {"format": _MANIFEST_FORMAT, "epoch": epoch, "written_at": written_at, "files": files}
    (folder / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def _read_manifest(text: str | None) -> dict[str, Any] | None:
    """A parsed checkpoint manifest, or None when it is missing, cut short or of another format."""
    if text is None:
        return None
    try:
        manifest = json.loads(text)
    except ValueError:
        return None
    if (not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT
            or not isinstance(manifest.get("files"), dict) or TRAINING_STATE not in manifest["files"]
            or not isinstance(manifest.get("epoch"), int) or not isinstance(manifest.get("written_at"), (int, float))):
        return None
    return manifest


def _manifest_matches(folder: Path, manifest: Mapping[str, Any]) -> bool:
    """Whether every file ``manifest`` lists is in ``folder`` whole (same size and SHA-256)."""
    for name, facts in manifest["files"].items():
        path = folder / name
        if not isinstance(facts, dict) or not path.is_file() or path.stat().st_size != facts.get("size"):
            return False
        if _sha256(path) != facts.get("sha256"):
            return False
    return True


def _stage_checkpoint(staging: Path, run_dir: Path, state: Mapping[str, Any], *, epoch: int,
                      written_at: float) -> None:
    """Write a report's checkpoint into ``staging``: the training state, the run files so far, the manifest last."""
    torch.save(state, staging / TRAINING_STATE)
    for name in _CARRIED_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, staging / name)
    best = run_dir / "checkpoints" / "best"
    if best.is_dir():
        shutil.copytree(best, staging / "best")
    _write_manifest(staging, epoch=epoch, written_at=written_at)


@dataclass(frozen=True)
class _TrialFolder:
    """The trial folder Tune keeps under ``storage_path``: a local folder or on a pyarrow filesystem.

    ``is_run_dir``: it is the trial's working folder itself, so there is nothing to pull or push.
    """

    fs: pafs.FileSystem
    path: str
    is_run_dir: bool = False

    @classmethod
    def of_session(cls, run_dir: Path) -> "_TrialFolder":
        """This trial's folder, from Tune's storage context (a developer API: Ray calls stay here)."""
        storage = tune.get_context().get_storage()
        fs, path = storage.storage_filesystem, storage.trial_fs_path
        same = isinstance(fs, pafs.LocalFileSystem) and Path(path).resolve() == run_dir.resolve()
        return cls(fs, path, same)

    def child(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def kind(self, *parts: str) -> pafs.FileType:
        return self.fs.get_file_info(self.child(*parts)).type

    def read_text(self, *parts: str) -> str | None:
        try:
            with self.fs.open_input_stream(self.child(*parts)) as handle:
                return handle.read().decode()
        except (OSError, UnicodeDecodeError):  # missing (FileNotFoundError is an OSError) or unreadable
            return None

    def checkpoint_names(self) -> list[str]:
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.Directory and _CHECKPOINT_NAME.fullmatch(info.base_name))

    def local(self, name: str, scratch: Path) -> Path:
        """A child folder as a local folder: in place on a local filesystem, else copied into scratch."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(self.child(name))
        target = scratch / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        pafs.copy_files(self.child(name), str(target), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return target

    def delete(self, *parts: str) -> None:
        kind = self.kind(*parts)
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.child(*parts))
        elif kind == pafs.FileType.File:
            self.fs.delete_file(self.child(*parts))


def _clear_next_checkpoint_folder() -> None:
    """Empty the folder Tune is about to persist this report's checkpoint into, if it exists.

    Tune numbers a restored trial's checkpoints on from its saved experiment state; after a
    SIGKILLed driver the next folders may hold checkpoints written after that save (one of them
    maybe the checkpoint this trial restored from, already loaded). Tune copies into an existing
    folder without emptying it (ray/train/_internal/storage.py, persist_current_checkpoint), which
    would leave two epochs' files in one checkpoint.
    """
    storage = tune.get_context().get_storage()
    # Ray's StorageContext._make_checkpoint_dir_name of the index its next report uses.
    target = _TrialFolder(storage.storage_filesystem, storage.trial_fs_path)
    name = f"checkpoint_{storage.current_checkpoint_index + 1:06d}"
    if target.kind(name) != pafs.FileType.NotFound:
        logger.info("replacing %s, a checkpoint Tune's saved experiment state does not list", name)
        target.delete(name)


def _pull_run_files(trial: _TrialFolder, run_dir: Path) -> list[str]:
    """Copy the trial folder's run files into an empty working folder; returns the names copied.

    A trial restarted in a new Ray session (its driver resumed) or on another node starts in an
    empty working folder while the trial folder holds the earlier attempt's files: they come here
    first, so they are set aside (attempts/N) or continued, never overwritten by the next upload.
    """
    names = (*_RUN_FILES, _ATTEMPTS)
    if trial.is_run_dir or any((run_dir / name).exists() for name in names):
        return []
    copied = []
    for name in names:
        if trial.kind(name) in (pafs.FileType.File, pafs.FileType.Directory):
            pafs.copy_files(trial.child(name), str(run_dir / name), source_filesystem=trial.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            copied.append(name)
    return copied


def _push_set_aside(trial: _TrialFolder, run_dir: Path, attempt: Path | None) -> None:
    """Set the same files aside in the trial folder as in the working folder (``attempt``: attempts/N).

    attempts/N is uploaded first; only then is each moved file replaced by the working folder's
    new copy (restored from the checkpoint) or removed, so a kill in between loses nothing.
    """
    if trial.is_run_dir or attempt is None:
        return
    local = pafs.LocalFileSystem()
    target = trial.child(_ATTEMPTS, attempt.name)
    trial.fs.create_dir(target, recursive=True)
    pafs.copy_files(str(attempt), target, source_filesystem=local, destination_filesystem=trial.fs)
    for moved in sorted(p.name for p in attempt.iterdir()):
        if (run_dir / moved).is_file():
            pafs.copy_files(str(run_dir / moved), trial.child(moved), source_filesystem=local,
                            destination_filesystem=trial.fs)
        else:
            trial.delete(moved)


def _set_aside_previous_attempt(run_dir: Path, names: tuple[str, ...] = _RUN_FILES) -> Path | None:
    """Keep a failed attempt's files under attempts/N/ (nothing a trial wrote is ever deleted).

    Returns attempts/N, or None when there was nothing to keep.
    """
    present = [name for name in names if (run_dir / name).exists()]
    if not present:
        return None
    attempts = run_dir / _ATTEMPTS
    attempts.mkdir(exist_ok=True)
    target = attempts / str(len(list(attempts.iterdir())) + 1)
    target.mkdir()
    for name in present:
        shutil.move(str(run_dir / name), str(target / name))
    return target


def cut_events(newer: str, at_checkpoint: str) -> str:
    """events.csv text cut back to a checkpoint: its rows, then the newer file's later non-epoch rows.

    ``newer`` is the working dir's events.csv (it starts with the checkpoint's rows when the trial
    restarts on the same node); its epoch rows after them are dropped, since the restored run
    trains those epochs again.
    """
    base = list(csv.reader(io.StringIO(at_checkpoint)))
    rows = list(csv.reader(io.StringIO(newer)))
    if not base or rows[: len(base)] != base:
        return at_checkpoint  # not the same log (another node's files): the checkpoint's rows only
    event = base[0].index("event") if "event" in base[0] else None
    later = [row for row in rows[len(base):] if event is None or len(row) <= event or row[event] != "epoch"]
    if not later:
        return at_checkpoint
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(later)
    return at_checkpoint + out.getvalue()


def find_restore_point(trial: _TrialFolder, scratch: Path, tune_checkpoint: tune.Checkpoint | None = None) -> Path | None:
    """The local folder of the newest complete checkpoint of a trial; None when it has none.

    Every ``checkpoint_*`` folder of the trial folder counts, listed in Tune's saved experiment
    state or not (written after its last save by a driver since SIGKILLed): the one with the
    latest epoch whose manifest checks out wins; a folder cut short is skipped. ``tune_checkpoint``
    (``tune.get_checkpoint()``) is the fallback when no folder has a manifest (written before
    manifests): Tune lists a checkpoint only once it is complete. A remote folder is copied into
    ``scratch``.
    """
    found = []
    for name in trial.checkpoint_names():
        manifest = _read_manifest(trial.read_text(name, CHECKPOINT_MANIFEST))
        if manifest is not None:
            found.append((manifest["epoch"], manifest["written_at"], name, manifest))
    for _, _, name, manifest in sorted(found, key=lambda item: item[:3], reverse=True):
        folder = trial.local(name, scratch)
        if _manifest_matches(folder, manifest):
            return folder
        logger.warning("%s is incomplete (its trial was lost while writing it); not restoring from it",
                       trial.child(name))
    if tune_checkpoint is None:
        return None
    parent, _, name = tune_checkpoint.path.rstrip("/").rpartition("/")
    return _TrialFolder(tune_checkpoint.filesystem, parent).local(name, scratch)


def _restore_from_folder(folder: Path, run_dir: Path, device: str) -> tuple[TrainingSnapshot, Path | None]:
    """Restore the run's files from a checkpoint folder; returns its snapshot and attempts/N."""
    state = torch.load(folder / TRAINING_STATE, map_location=device, weights_only=True)
    # The run continues from the checkpoint's epoch, so its files must end there too: files
    # in the working dir (a restart on the same node, or pulled from the trial folder) may hold
    # later epochs, which would then be logged twice. They are kept whole under attempts/N/;
    # events.csv goes on from the checkpoint's rows plus the later rows that are not epochs (the
    # error that ended the attempt), and the other files are the checkpoint's copies.
    newer_events = (run_dir / "events.csv").read_text() if (run_dir / "events.csv").exists() else None
    attempt = _set_aside_previous_attempt(run_dir, tuple(n for n in _CARRIED_FILES if (folder / n).exists()))
    for name in _CARRIED_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, run_dir / name)
    if newer_events is not None and (folder / "events.csv").exists():
        (run_dir / "events.csv").write_text(cut_events(newer_events, (folder / "events.csv").read_text()))
    best = run_dir / "checkpoints" / "best"
    if (folder / "best").is_dir() and not best.exists():
        shutil.copytree(folder / "best", best)
    snapshot = TrainingSnapshot.from_dict(state)
    logger.info("resuming from %s after epoch %s", folder.name, snapshot.epoch)
    return snapshot, attempt


def _start_attempt(trial: _TrialFolder, run_dir: Path, device: str) -> TrainingSnapshot | None:
    """Prepare the working folder for this attempt; returns the snapshot to resume from, if any.

    The earlier attempt's files come from the trial folder when the working folder is new; the
    run then continues from the newest complete checkpoint, or starts afresh with the earlier
    files set aside in attempts/N/ (in the working folder and the trial folder alike).
    """
    staging = staging_folder(run_dir)
    shutil.rmtree(staging, ignore_errors=True)  # left by an attempt killed inside a report
    pulled = _pull_run_files(trial, run_dir)
    if pulled:
        logger.info("continuing the files of an earlier attempt from %s: %s", trial.path, ", ".join(pulled))
    try:
        listed = tune.get_checkpoint()
        folder = find_restore_point(trial, staging / "restore", listed)
        if folder is not None and (listed is None or folder.name != Path(listed.path).name):
            logger.info("restoring from %s, newer than what Tune's saved experiment state lists (%s)",
                        folder.name, "none" if listed is None else Path(listed.path).name)
        if folder is None:
            state, attempt = None, _set_aside_previous_attempt(run_dir)
        else:
            state, attempt = _restore_from_folder(folder, run_dir, device)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _push_set_aside(trial, run_dir, attempt)
    return state
