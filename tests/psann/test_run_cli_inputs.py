"""Run CLI: every flag and output problem is exit 2 with one line naming the flag, before any folder."""

from __future__ import annotations

import os

import pytest

from psann.contract import EXIT_BAD_INPUT
from psann.scripts.hisso_log_run import main

CONFIG = """
estimator: {target: psann.PSANNRegressor, params: {hidden_units: 8, epochs: 1, device: %s}}
data: {loader: %s, kwargs: {steps: 200, features: 2, seed: 0}}
hisso: {enabled: true, window: 8, batch_episodes: 2, updates_per_epoch: 1}
"""
TOY = "psann.scripts.hisso_log_run.toy_hisso_dataset"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG % ("cpu", TOY))
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--run-name", ".hidden"], "--run-name"),
        (["--run-name", "a/b"], "--run-name"),
        (["--run-name", "x" * 300], "--run-name"),
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**32)], "--seed"),
        (["--trust", "not a module"], "--trust"),
        (["--device", "cuda:0"], "--device"),
    ],
)
def test_a_bad_flag_is_exit_2_naming_it_and_no_folder_is_made(tmp_path, capsys, config, extra, key):
    if "--device" in extra and __import__("torch").cuda.is_available():
        pytest.skip("this host has CUDA")
    out = tmp_path / "out"
    code, err = _run(capsys, "--config", config, "--output-dir", out, *extra)
    assert code == EXIT_BAD_INPUT
    assert len(err) == 1 and err[0].startswith(f"error: {key}:"), err
    assert not out.exists()


def test_an_output_dir_that_is_a_file_or_under_one_is_refused(tmp_path, capsys, config):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for target in (afile, afile / "sub"):
        code, err = _run(capsys, "--config", config, "--output-dir", target)
        assert code == EXIT_BAD_INPUT and err[0].startswith("error: --output-dir:") and "not a folder" in err[0]
    assert afile.read_text() == "keep me"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_dir_that_is_not_writable_is_refused(tmp_path, capsys, config):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, err = _run(capsys, "--config", config, "--output-dir", locked / "runs")
    assert code == EXIT_BAD_INPUT and "not writable" in err[0]


def test_a_config_device_this_host_lacks_is_bad_input(tmp_path, capsys):
    if __import__("torch").cuda.is_available():
        pytest.skip("this host has CUDA")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG % ("cuda", TOY))
    code, err = _run(capsys, "--config", path, "--output-dir", tmp_path / "out")
    assert code == EXIT_BAD_INPUT and err[0].startswith("error: estimator.params.device:")
    assert not (tmp_path / "out").exists()


def test_an_untrusted_loader_is_refused_and_trust_lets_it_through(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSANN_TRUST", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG % ("cpu", "json.loads"))
    code, err = _run(capsys, "--config", path, "--output-dir", tmp_path / "out")
    assert code == EXIT_BAD_INPUT
    assert err[0].startswith("error: data.loader:") and "--trust json" in err[0]
    # Trusted, json.loads is imported and called with the loader's kwargs: it is no loader, so the
    # call fails, which proves the trust reached the import.
    code, err = _run(capsys, "--config", path, "--output-dir", tmp_path / "out", "--trust", "json")
    assert code != 0 and "trusted" not in " ".join(err)
