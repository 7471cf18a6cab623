"""Package boundaries: psann works without Ray; public names resolve."""

import subprocess
import sys

import psann
import psann.hisso
import psann.estimators


def test_importing_psann_does_not_import_ray():
    code = "import sys, psann, psann.runs, psann.scripts.hisso_log_run; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cluster_package_imports_neither_psann_nor_sweeps():
    code = "import sys, cluster.runpod; print(any(m.split('.')[0] in ('psann', 'sweeps') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_names_resolve():
    for module in (psann, psann.hisso, psann.estimators):
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"
