"""Package boundaries and import weight: psann works without Ray; reading results loads neither
torch nor Ray; public names resolve lazily (PEP 562)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import psann
import psann.estimators
import psann.hisso
import sweeps
import sweeps.results

TESTS = Path(__file__).resolve().parent
HEAVY = ("torch", "ray", "sklearn", "duckdb", "matplotlib")


def _loaded_after(code: str, modules=HEAVY, **kwargs) -> list[str]:
    """Run `code` in a fresh interpreter; the top-level packages of `modules` it had loaded."""
    probe = (f"{code}\nimport sys\n"
             f"print('LOADED=' + ','.join(m for m in {tuple(modules)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, **kwargs)
    line = [l for l in out.stdout.splitlines() if l.startswith("LOADED=")][-1]
    return [m for m in line[len("LOADED="):].split(",") if m]


def test_importing_psann_does_not_import_ray():
    code = "import psann, psann.runs, psann.scripts.hisso_log_run"
    assert "ray" not in _loaded_after(code)


def test_cluster_package_imports_neither_psann_nor_sweeps():
    code = "import sys, cluster.runpod; print(any(m.split('.')[0] in ('psann', 'sweeps') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["psann", "psann.errors", "psann.contract", "sweeps"])
def test_standard_library_modules_and_package_roots_load_no_torch(module):
    assert _loaded_after(f"import {module}") == []


@pytest.mark.parametrize("module", ["sweeps.results", "sweeps.compendium"])
def test_reading_results_loads_neither_torch_nor_ray(module):
    # DuckDB and matplotlib load on first use too (a filter, a plot), not on import.
    assert _loaded_after(f"import {module}") == []


def _standard_sweep(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("_trial_folders", TESTS / "sweeps" / "_trial_folders.py")
    folders = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_trial_folders", folders)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules["_trial_folders"])
    folders = sys.modules["_trial_folders"]
    return folders.standard_sweep(tmp_path)


def test_results_command_line_loads_neither_torch_nor_ray(tmp_path):
    path = _standard_sweep(tmp_path)
    sweeps.results.ingest_sweep(path)
    # `python -m sweeps.results query ...` with a filter and a sort, run as the module runs;
    # the probe prints what was loaded once the command exits.
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('LOADED=' + ','.join(m for m in ('torch', 'ray') if m in sys.modules)))\n"
        f"sys.argv = ['sweeps.results', 'query', {str(path)!r}, '--where', \"status == 'SUCCESS'\",\n"
        "            '--sort', 'val_loss', '--columns', 'trial_id', '--format', 'json']\n"
        "runpy.run_module('sweeps.results', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "LOADED=", "the results CLI imported " + lines[-1]
    expected = sweeps.results.query(path, where="status == 'SUCCESS'", sort="val_loss", columns=["trial_id"])
    assert json.loads("\n".join(lines[:-1])) == expected.to_pylist()  # the query really ran


def test_estimators_work_without_any_extra_installed():
    # What `pip install psann-sweeps` (no extras) gives: the packages of the extras cannot load.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'pyarrow', 'duckdb', 'matplotlib', 'optuna', 'requests'):\n"
        "            raise ImportError(f'{name} is not installed (blocked by the test)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from psann import PSANNRegressor\n"
        "import psann.runs, psann.scripts.hisso_log_run\n"
        "X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(-1, 1)\n"
        "est = PSANNRegressor(hidden_units=8, epochs=2, random_state=0, device='cpu').fit(X, X[:, 0])\n"
        "print(est.predict(X).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(64,)"


def test_public_names_resolve():
    for module in (psann, psann.hisso, psann.estimators, sweeps, sweeps.results):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"


def test_lazy_packages_list_their_names_and_refuse_unknown_ones():
    from psann import PSANNRegressor, TrainingSnapshot, ValidationError  # noqa: F401
    from psann.errors import ValidationError as Defined

    assert ValidationError is Defined
    for module in (psann, sweeps):
        assert set(module.__all__) <= set(dir(module))
        with pytest.raises(AttributeError, match=f"module '{module.__name__}' has no attribute 'nope'"):
            getattr(module, "nope")
    assert {"ValidationError", "TrainingSnapshot", "PSANNRegressor"} <= set(psann.__all__)
