"""psann.provenance: what a run records about its code, software stack and machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from psann.provenance import PROVENANCE_FIELDS, PROVENANCE_KEYS, collect_provenance, git_facts

ROOT = Path(__file__).resolve().parents[2]
KIND_TYPES = {"str": str, "int": int, "bool": bool}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args],
                   cwd=repo, check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "tracked.py").write_text("x = 1\n")
    _git(repo, "add", "tracked.py")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def test_provenance_has_every_field_with_its_kind_and_is_json():
    import torch

    prov = collect_provenance("cpu")
    assert list(prov) == list(PROVENANCE_KEYS)
    for key, kind in PROVENANCE_FIELDS:
        assert prov[key] is None or isinstance(prov[key], KIND_TYPES[kind]), (key, prov[key])
        assert not (kind == "int" and isinstance(prov[key], bool)), key
    assert json.loads(json.dumps(prov)) == prov
    assert prov["torch_version"] == str(torch.__version__)
    assert prov["host"] == socket.gethostname()
    assert prov["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(prov["psann_version"], str) and prov["psann_version"]
    assert isinstance(prov["gpu_count"], int) and prov["gpu_count"] >= 0
    # A CPU device names no GPU, whatever the machine has.
    assert prov["gpu_name"] is None
    if not torch.cuda.is_available():
        assert prov["gpu_count"] == 0 and prov["cudnn_version"] is None


def test_driver_git_facts_replace_asking_git_here():
    prov = collect_provenance("cpu", git={"git_commit": "abc123", "git_dirty": 0})
    assert prov["git_commit"] == "abc123" and prov["git_dirty"] is False
    prov = collect_provenance("cpu", git={})
    assert prov["git_commit"] is None and prov["git_dirty"] is None


def test_git_facts_of_a_clean_then_dirty_checkout(checkout: Path):
    clean = git_facts(checkout)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    assert clean == {"git_commit": head, "git_dirty": False}
    (checkout / "untracked.txt").write_text("run output\n")
    assert git_facts(checkout)["git_dirty"] is False  # untracked files do not count (git describe --dirty)
    (checkout / "tracked.py").write_text("x = 2\n")
    assert git_facts(checkout) == {"git_commit": head, "git_dirty": True}


def test_git_facts_are_none_outside_a_checkout_or_below_its_root(tmp_path: Path, checkout: Path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_facts(plain) == {"git_commit": None, "git_dirty": None}
    assert git_facts(tmp_path / "missing") == {"git_commit": None, "git_dirty": None}
    # A package installed into a folder of some other repository is not that repository's code.
    nested = checkout / "venv" / "site-packages"
    nested.mkdir(parents=True)
    assert git_facts(nested) == {"git_commit": None, "git_dirty": None}


def test_importing_provenance_loads_neither_torch_nor_ray():
    code = ("import sys, psann.provenance; "
            "print(sorted(m for m in ('torch', 'ray', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
