"""Honest dependencies: the estimators alone install no Ray; `make` installs every extra."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {"torch", "numpy", "scikit-learn", "pyyaml"}
# Packages only the sweeps, the results store, the compendium or the cluster provider use.
EXTRAS_ONLY = {"ray", "pyarrow", "duckdb", "matplotlib", "optuna", "requests"}


def _name(requirement: str) -> str:
    """The normalised project name of a requirement string ("ray[tune]==2.60.0" -> "ray")."""
    return re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _version_floor(requirement: str) -> tuple[int, ...]:
    match = re.search(r">=\s*([\d.]+)", requirement)
    assert match, f"{requirement!r} has no >= floor"
    return tuple(int(part) for part in match.group(1).split("."))


def test_core_dependencies_are_what_the_estimators_need_and_nothing_more():
    assert {_name(r) for r in PYPROJECT["dependencies"]} == CORE


def test_ray_pyarrow_and_duckdb_appear_only_in_extras():
    extras = PYPROJECT["optional-dependencies"]
    assert {_name(r) for r in PYPROJECT["dependencies"]}.isdisjoint(EXTRAS_ONLY)
    sweeps = {_name(r) for r in extras["sweeps"]}
    assert {"ray", "pyarrow", "duckdb", "matplotlib", "optuna"} <= sweeps
    assert "requests" in {_name(r) for r in extras["cluster"]}
    # One Ray version everywhere it is named (driver, cluster provider, cluster/runpod.yaml).
    pins = {re.search(r"==\s*([\w.]+)", r).group(1) for e in extras.values() for r in e if _name(r) == "ray"}
    assert len(pins) == 1
    assert f"ray[tune]=={pins.pop()}" in (ROOT / "cluster" / "runpod.yaml").read_text()


def test_installed_metadata_has_no_ray_outside_the_extras():
    try:
        requires = importlib.metadata.requires("psann-sweeps") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("psann-sweeps is not installed (run `make setup`)")
    unconditional = {_name(r) for r in requires if "extra ==" not in r.replace("'", '"')}
    assert unconditional.isdisjoint(EXTRAS_ONLY), (
        f"the installed psann-sweeps requires {sorted(unconditional & EXTRAS_ONLY)} without an "
        f"extra; reinstall it (`make setup`) if pyproject.toml changed since")
    assert unconditional == CORE


def test_torch_floor_covers_what_the_code_uses():
    # Fused Adam on CPU (psann.training) came in torch 2.4; a GPU image's torch 2.11 must do.
    [torch] = [r for r in PYPROJECT["dependencies"] if _name(r) == "torch"]
    assert _version_floor(torch) >= (2, 4)
    assert not re.search(r"<|==|~=", torch), "an upper bound would make pip replace a GPU image's torch"
    [sklearn] = [r for r in PYPROJECT["dependencies"] if _name(r) == "scikit-learn"]
    assert _version_floor(sklearn) >= (1, 6)  # validate_data and the estimator tags


def test_make_installs_every_extra():
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS\s*:?=\s*(\S+)\s*$", makefile, flags=re.M)
    assert extras and '-e ".[$(EXTRAS)]"' in makefile
    assert set(extras.group(1).split(",")) == set(PYPROJECT["optional-dependencies"])
