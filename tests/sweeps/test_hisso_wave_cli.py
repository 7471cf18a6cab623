"""The entry script: --dry-run validates and plans without starting Ray; exit codes name the cause."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from _sweep_helpers import ROOT, stage, write_sweep, worker_env
from psann.contract import EXIT_BAD_INPUT, EXIT_CODES, EXIT_INTERRUPTED, EXIT_NO_GPU

SCRIPT = ROOT / "sweeps" / "hisso_wave.py"


def _main(argv):
    from sweeps.hisso_wave import main

    return main([str(a) for a in argv])


@pytest.fixture(autouse=True)
def _no_ray_before():
    import ray

    assert not ray.is_initialized()
    yield


@pytest.mark.parametrize(
    "stages, search_space, key",
    [
        ([stage("smoke", num_sample=2)], None, "stages[0].num_sample"),
        ([stage("smoke", scheduler={"type": "asha", "max_t": 2, "grace_period": 3})], None,
         "stages.smoke.scheduler.grace_period"),
        ([stage("smoke")], {"estimator.params.lr": {"loguniform": [0, 1]}}, "search_space.estimator.params.lr.loguniform"),
        ([stage("smoke")], {"estimator.params.hidden_units": {"choice": [8, -1]}}, "search_space.estimator.params.hidden_units"),
    ],
)
def test_dry_run_refuses_a_bad_sweep_file_naming_the_key(tmp_path, capsys, stages, search_space, key):
    import ray

    path = write_sweep(tmp_path, stages, search_space=search_space)
    code = _main(["--sweep", path, "--storage", tmp_path / "out", "--dry-run"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT == 2
    assert f"error: {key}" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, capsys):
    import ray

    path = write_sweep(
        tmp_path,
        [stage("smoke", num_samples=2), stage("hisso", resources={"cpu": 1, "gpu": 0.5}, num_samples=3, epochs=3,
                                              max_concurrent_trials=2, scheduler="asha")],
        search_space={"estimator.params.lr": {"grid": [0.001, 0.002]}},
    )
    code = _main(["--sweep", path, "--storage", tmp_path / "out", "--name", "plan", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "stage smoke: 4 trials x {cpu: 1, gpu: 0}" in out
    assert "stage hisso: 6 trials x {cpu: 1, gpu: 0.5}" in out
    assert "peak ask {cpu: 2, gpu: 1}" in out  # 2 concurrent trials of half a GPU
    assert "ASHA(max_t=3" in out
    assert f"sweep folder would be {(tmp_path / 'out' / 'plan').resolve()}" in out
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_dry_run_of_the_default_sweep_file_passes(capsys):
    assert _main(["--dry-run", "--storage", "/nonexistent/never-created"]) == 0
    out = capsys.readouterr().out
    assert "(profile local)" in out and "may run on CPU: allow_cpu" in out


def test_unknown_stage_in_stages_flag_is_refused(tmp_path, capsys):
    path = write_sweep(tmp_path, [stage("smoke")])
    assert _main(["--sweep", path, "--stages", "smoke,hiso", "--dry-run"]) == 2
    assert "'hiso'" in capsys.readouterr().err


def test_unreachable_storage_uri_exits_2_naming_storage(tmp_path, capsys):
    path = write_sweep(tmp_path, [stage("smoke")])
    assert _main(["--sweep", path, "--storage", "nosuchscheme://bucket/sweeps", "--dry-run"]) == 2
    assert "--storage" in capsys.readouterr().err


def test_storage_uri_dry_run_names_the_sweep_folder_under_the_uri(tmp_path, capsys):
    path = write_sweep(tmp_path, [stage("smoke")])
    uri = (tmp_path / "store").as_uri()
    assert _main(["--sweep", path, "--storage", uri, "--name", "s1", "--dry-run"]) == 0
    assert f"{uri}/s1" in capsys.readouterr().out


def test_gpu_stage_without_gpu_exits_3_before_any_trial(tmp_path):
    path = write_sweep(tmp_path, [stage("smoke"), stage("hisso", resources={"cpu": 1, "gpu": 1}, epochs=2)])
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sweep", str(path), "--storage", str(tmp_path / "out"), "--name", "nogpu",
         "--num-cpus", "1"],
        capture_output=True, text=True, timeout=180, env=worker_env(), cwd=tmp_path,
    )
    assert proc.returncode == EXIT_NO_GPU == 3, proc.stderr[-3000:]
    assert "--allow-cpu" in proc.stderr and "'hisso'" in proc.stderr
    # Refused up front: not even the smoke stage ran, and the same --name can be used again.
    assert not (tmp_path / "out" / "nogpu").exists()


def test_ctrl_c_before_ray_starts_exits_130(tmp_path, capsys, monkeypatch):
    import ray

    import sweeps.hisso_wave as script

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(script, "load_sweep", interrupted)
    code = _main(["--sweep", write_sweep(tmp_path, [stage("smoke")]), "--storage", tmp_path / "out"])
    assert code == EXIT_INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_docs_list_the_contract_exit_codes_of_the_sweep():
    text = (ROOT / "docs" / "sweeps.md").read_text()
    section = text[text.index("### Exit codes"): text.index("## Writing a sweep file")]
    documented = {int(code): name for code, name in re.findall(r"^\| (\d+) \| `(EXIT_\w+)` \|", section, flags=re.M)}
    assert set(documented) == set(EXIT_CODES)
    import psann.contract as contract

    assert all(getattr(contract, name) == code for code, name in documented.items())
