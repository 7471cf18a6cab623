"""What the sweep runner wrote beside the trial folders: <stage>/stage_status.json and <sweep>/sweep.json.

- <stage>/stage_status.json: the sweep runner's verdict per trial (matched to its folder by
  trial_dir or trial_id), the stage's max_epochs and the stage's own status;
- <sweep>/sweep.json: the ranking window, the search algorithm and the driver's git facts
  (provenance), once per sweep.
Nothing here raises on a bad file: a bad value is a warning and the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from psann import contract as C
from psann.errors import short_repr

from . import _schema as S
from . import _store

if TYPE_CHECKING:
    from ._trial import Stage

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
DEFAULT_SEARCH = "random"  # what a sweep.json without "search" ran (sweeps before optuna search)


@dataclass(frozen=True)
class SweepSettings:
    """What sweep.json says about every trial of the sweep (defaults without one)."""

    rank_window: int = C.RANK_WINDOW
    search: str | None = None  # null for a folder of plain runs (no sweep.json)
    # sweep.json "provenance" git facts (the driver's): they fill a trial's that could not be read
    # where it ran (a cluster worker without a checkout).
    git_commit: str | None = None
    git_dirty: bool | None = None


def read_sweep_settings(fs: pafs.FileSystem, root: str, warnings: list[str]) -> SweepSettings:
    """rank_window and search from <sweep>/sweep.json; a bad value is a warning and the default."""
    path = _store.join(root, SWEEP_FILE)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return SweepSettings()
    obj, problem = _store.read_json_object(fs, path, SWEEP_FILE, warnings)
    if problem is not None:
        message = f"{path}: {problem}; rank_window {C.RANK_WINDOW} and search {DEFAULT_SEARCH!r} assumed"
        logger.warning(message)
        warnings.append(message)
        return SweepSettings(search=DEFAULT_SEARCH)
    git_commit, git_dirty = _sweep_git(obj.get("provenance"), path, warnings)
    window = obj.get("rank_window", C.RANK_WINDOW)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        message = f"{path}: rank_window must be an int >= 1, got {window!r}; {C.RANK_WINDOW} used"
        logger.warning(message)
        warnings.append(message)
        window = C.RANK_WINDOW
    search = obj.get("search", DEFAULT_SEARCH)
    if not isinstance(search, str) or not search:
        message = (f"{path}: search must be a name such as 'random' or 'optuna', got {search!r}; "
                   f"{DEFAULT_SEARCH!r} used")
        logger.warning(message)
        warnings.append(message)
        search = DEFAULT_SEARCH
    return SweepSettings(rank_window=window, search=search, git_commit=git_commit, git_dirty=git_dirty)


def _sweep_git(provenance: Any, path: str, warnings: list[str]) -> tuple[str | None, bool | None]:
    """(git_commit, git_dirty) of sweep.json's "provenance"; (None, None) without a usable one."""
    if provenance is None:
        return None, None
    commit = provenance.get("git_commit") if isinstance(provenance, dict) else None
    dirty = provenance.get("git_dirty") if isinstance(provenance, dict) else None
    if not isinstance(provenance, dict) or not isinstance(commit, (str, type(None))) \
            or not isinstance(dirty, (bool, type(None))):
        message = (f"{path}: provenance must be an object with git_commit (str or null) and git_dirty "
                   f"(bool or null), got {str(provenance)[:80]}; ignored")
        logger.warning(message)
        warnings.append(message)
        return None, None
    return commit, dirty


def _apply_stage_status(
    fs: pafs.FileSystem, stage: Stage, path: str, warnings: list[str]
) -> None:
    status, problem = _store.read_json_object(fs, path, "stage_status.json", warnings)
    entries = [] if status is None else status.get("trials") or []
    if problem is None and not isinstance(entries, list):
        problem = f"'trials' is not a list (got {type(entries).__name__})"
    if problem is not None:
        message = f"{path}: unreadable stage_status.json ({problem}); runner outcomes ignored"
        logger.warning(message)
        warnings.append(message)
        return
    max_epochs = status.get("max_epochs")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or S.storable(max_epochs)[1]:
        if max_epochs is not None:
            warnings.append(f"{path}: max_epochs must be an int, got {short_repr(max_epochs)}; null")
        max_epochs = None
    # The stage's own status (e.g. a stage stopped by a GPU budget) is carried as written.
    stage_status = status.get("status")
    stage_status = None if stage_status is None else S.storable(str(stage_status))[0]
    for src in stage.sources:
        src.stage_status = stage_status
    by_dir = {s.dir_name: s for s in stage.sources}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            warnings.append(f"{path}: trials[{index}] is not an object (got {short_repr(entry)}); ignored")
            continue
        dir_name, tid = entry.get("trial_dir"), entry.get("trial_id")
        if not isinstance(dir_name, (str, type(None))) or not isinstance(tid, (str, type(None))) \
                or not (dir_name or tid) or any(S.storable(v)[1] for v in (dir_name, tid)):
            warnings.append(f"{path}: trials[{index}] needs trial_dir or trial_id as text, got "
                            f"trial_dir {short_repr(dir_name)}, trial_id {short_repr(tid)}; ignored")
            continue
        src = by_dir.get(dir_name or "")
        if src is None and tid:
            src = next((s for s in stage.sources if tid in s.dir_name), None)
        if src is None:
            # Listed by the runner but no folder on disk: keep it visible as a row.
            from ._trial import TrialSource  # _trial imports this module
            src = TrialSource(
                stage.name, dir_name or tid, "", {}, folder_missing=True,
                stage_status=stage_status,
            )
            stage.sources.append(src)
            by_dir[src.dir_name] = src
        src.runner = entry
        src.max_epochs = max_epochs
