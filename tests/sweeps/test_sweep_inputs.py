"""Sweep CLI: every problem of the sweep file, its names and its flags is exit 2 with one line
naming the key, before Ray starts and before any sweep folder exists."""

from __future__ import annotations

import sys

import pytest
import yaml

from _sweep_helpers import ROOT, stage, write_sweep
from psann.contract import EXIT_BAD_INPUT

sys.path.insert(0, str(ROOT / "sweeps"))
from hisso_wave import main  # noqa: E402


@pytest.fixture
def no_ray(monkeypatch):
    """Fail loudly if anything tries to start Ray."""
    import ray

    def refuse(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(ray, "init", refuse)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _edit(path, **top):
    raw = yaml.safe_load(path.read_text())
    raw.update(top)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "text, key",
    [
        ("name: a\nname: b\n", "sweep.yaml"),
        ("name: [unclosed\n", "sweep.yaml"),
        ("rank_window: .nan\n", "rank_window"),
    ],
)
def test_a_broken_sweep_file_is_exit_2_naming_the_key(tmp_path, capsys, no_ray, text, key):
    path = write_sweep(tmp_path, [stage("smoke")])
    path.write_text(text + path.read_text().split("\n", 1)[1])
    code, err = _run(capsys, "--sweep", path, "--storage", tmp_path / "out", "--dry-run")
    assert code == EXIT_BAD_INPUT and len(err) == 1, err
    assert err[0].startswith("error: ") and key in err[0].split(":")[1]
    assert not (tmp_path / "out").exists()


def test_bytes_that_are_not_utf8_and_a_directory_are_refused(tmp_path, capsys, no_ray):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\n")
    code, err = _run(capsys, "--sweep", path, "--dry-run")
    assert code == EXIT_BAD_INPUT and "not UTF-8" in err[0]
    (tmp_path / "d.yaml").mkdir()
    code, err = _run(capsys, "--sweep", tmp_path / "d.yaml", "--dry-run")
    assert code == EXIT_BAD_INPUT and "is a directory" in err[0]


@pytest.mark.parametrize(
    "top, key",
    [
        ({"name": "../escape"}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"name": "x" * 250}, "name"),
        ({"seed": 2**32}, "seed"),
        ({"seed": -1}, "seed"),
        ({"hang_timeout_s": float("inf")}, "hang_timeout_s"),
        ({"search_space": {"estimator.params.lr": {"uniform": [0.001, float("inf")]}}}, "search_space.estimator.params.lr.uniform[1]"),
        ({"search_space": {"estimator.params.lr": {"choice": [0.001, -1.0]}}}, "search_space.estimator.params.lr"),
        ({"stages": [stage("s" * 300)]}, "stages[0].name"),
    ],
)
def test_bad_values_are_exit_2_naming_the_key(tmp_path, capsys, no_ray, top, key):
    path = _edit(write_sweep(tmp_path, [stage("smoke")]), **top)
    code, err = _run(capsys, "--sweep", path, "--storage", tmp_path / "out")
    assert code == EXIT_BAD_INPUT and len(err) == 1, err
    assert err[0].startswith(f"error: {key}:"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--name", "../x"], "--name"),
        (["--name", ".x"], "--name"),
        (["--storage", "s3://"], "--storage"),
        (["--storage", "gs:///path"], "--storage"),
        (["--trust", "a b"], "--trust"),
    ],
)
def test_bad_flags_are_exit_2_naming_the_flag(tmp_path, capsys, no_ray, flags, key):
    path = write_sweep(tmp_path, [stage("smoke")])
    argv = ["--sweep", path, *flags]
    if "--storage" not in flags:
        argv += ["--storage", tmp_path / "out"]
    code, err = _run(capsys, *argv)
    assert code == EXIT_BAD_INPUT and err[0].startswith(f"error: {key}:"), err
    assert not (tmp_path / "out").exists()


def test_a_storage_folder_that_is_a_file_is_refused_and_kept(tmp_path, capsys, no_ray):
    path = write_sweep(tmp_path, [stage("smoke")])
    afile = tmp_path / "afile"
    afile.write_text("keep")
    code, err = _run(capsys, "--sweep", path, "--storage", afile)
    assert code == EXIT_BAD_INPUT and err[0].startswith("error: --storage:") and afile.read_text() == "keep"


def test_an_untrusted_callable_in_the_base_config_is_refused_before_import(tmp_path, capsys, no_ray, monkeypatch):
    monkeypatch.delenv("PSANN_TRUST", raising=False)
    path = write_sweep(tmp_path, [stage("smoke")])
    run = yaml.safe_load((tmp_path / "run.yaml").read_text())
    run["hisso"]["reward"] = "os:system"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    code, err = _run(capsys, "--sweep", path, "--storage", tmp_path / "out")
    assert code == EXIT_BAD_INPUT and "hisso.reward" in err[0] and "--trust os" in err[0], err
