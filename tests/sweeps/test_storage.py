"""SweepStore: the sweep runner's own files on local folders and on non-local pyarrow filesystems."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow.fs as pafs
import pytest

from sweeps.storage import SweepStore


@pytest.fixture
def remote_store():
    """A store on pyarrow's in-memory mock filesystem: the non-local code path, no network."""
    store = SweepStore("file:///bucket/sweeps/s1")
    store.fs = pafs._MockFileSystem(datetime.now(timezone.utc))
    store.is_local = False
    return store


def test_local_store_writes_json_atomically_and_reads_it_back(tmp_path):
    store = SweepStore(tmp_path / "sweep")
    store.write_json({"stage": "smoke", "loss": float("nan")}, "smoke", "stage_status.json")
    assert json.loads((tmp_path / "sweep" / "smoke" / "stage_status.json").read_text()) == {"stage": "smoke", "loss": None}
    assert store.read_json("smoke", "stage_status.json")["stage"] == "smoke"
    assert not list((tmp_path / "sweep" / "smoke").glob("*.tmp"))


def test_uri_and_path_name_the_same_folder(tmp_path):
    by_uri = SweepStore((tmp_path / "s").as_uri())
    by_path = SweepStore(tmp_path / "s")
    by_uri.write_json({"a": 1}, "x.json")
    assert by_path.read_json("x.json") == {"a": 1}
    assert by_uri.uri.startswith("file://") and by_uri.name == by_path.name == "s"


def test_remote_store_round_trips_files_and_lists_folders(remote_store):
    assert remote_store.read_json("sweep.json") is None and not remote_store.exists("sweep.json")
    remote_store.write_json({"name": "s1"}, "sweep.json")
    remote_store.write_json({"stage": "smoke"}, "smoke", "stage_status.json")
    remote_store.write_json({"stage": "hisso"}, "hisso", "stage_status.json")
    assert remote_store.read_json("sweep.json") == {"name": "s1"}
    assert remote_store.exists("smoke", "stage_status.json")
    assert remote_store.child_dirs() == ["hisso", "smoke"]
    assert remote_store.child_dirs("missing") == []
    with pytest.raises(ValueError, match="not a local folder"):
        remote_store.local_path("sweep.json")


def test_remote_store_reads_a_corrupt_json_as_none(remote_store):
    remote_store.makedirs("smoke")
    with remote_store.fs.open_output_stream(remote_store.path("smoke", "stage_status.json")) as handle:
        handle.write(b'{"stage": ')
    assert remote_store.read_json("smoke", "stage_status.json") is None
