"""Where a sweep lives: a local folder or any pyarrow filesystem URI (s3://, gs://, file://...).

Tune writes the trial folders there itself (it takes the same location as ``storage_path``); the
sweep runner writes its own small files (sweep.json, stage_status.json, hung_trials.json) and reads
trial files back through this one class, so nothing else in sweeps/ cares which it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import pyarrow.fs as pafs

from psann.runlog import atomic_write_text, json_safe, write_json_atomic

__all__ = ["SweepStore"]


class SweepStore:
    """A sweep folder addressed by a local path or a filesystem URI.

    Example::

        store = SweepStore("s3://bucket/sweeps/hisso_wave-20261123")
        store.write_json({"stage": "smoke"}, "smoke", "stage_status.json")
        store.read_json("smoke", "stage_status.json")
    """

    def __init__(self, location: str | os.PathLike) -> None:
        text = str(location)
        if "://" in text:
            self.fs, root = pafs.FileSystem.from_uri(text)
            self.root = root.rstrip("/")
            self.uri = text.rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(text).resolve())
            self.uri = self.root
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"SweepStore({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    @property
    def name(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def path(self, *parts: str) -> str:
        """Path inside the filesystem (what pyarrow.fs calls take)."""
        return "/".join([self.root, *parts])

    def uri_of(self, *parts: str) -> str:
        """Location of a child as Tune and the results store take it (a path or a URI)."""
        return "/".join([self.uri, *parts])

    def local_path(self, *parts: str) -> Path:
        """A child as a local Path (only for local stores)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local folder")
        return Path(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def read_text(self, *parts: str) -> str | None:
        try:
            with self.fs.open_input_stream(self.path(*parts)) as handle:
                return handle.read().decode()
        except (FileNotFoundError, OSError):
            return None

    def read_json(self, *parts: str) -> Any:
        """Parsed JSON of a child file; None when it is missing or unreadable."""
        text = self.read_text(*parts)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def write_json(self, data: Mapping[str, Any], *parts: str) -> None:
        """Write a JSON file: atomically (temp + rename) locally; object stores publish an object
        only when its upload completes, so a reader never sees half of it there either."""
        if self.is_local:
            write_json_atomic(self.local_path(*parts), data)
            return
        self.write_text(json.dumps(json_safe(dict(data)), indent=2, sort_keys=True) + "\n", *parts)

    def write_text(self, text: str, *parts: str) -> None:
        """Write a text file, atomically locally and whole on an object store (as write_json)."""
        if self.is_local:
            atomic_write_text(self.local_path(*parts), text)
            return
        self.fs.create_dir(self.path(*parts[:-1]), recursive=True)
        with self.fs.open_output_stream(self.path(*parts)) as handle:
            handle.write(text.encode())

    def child_dirs(self, *parts: str) -> list[str]:
        """Names of the folders directly under a child folder (empty when it is missing)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.Directory)
