"""Configs are code: a path is imported only inside the trusted modules (psann._imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from psann._imports import (
    TRUST_ENV,
    UntrustedImportError,
    import_callable,
    import_object,
    import_path_of,
    is_trusted,
    trust,
    trusted_modules,
)
from psann.errors import ValidationError


@pytest.fixture
def no_trust(monkeypatch):
    """The user trusts nothing: only psann and sweeps may be named."""
    monkeypatch.delenv(TRUST_ENV, raising=False)


def test_the_library_namespaces_are_trusted_and_nothing_else(no_trust):
    assert trusted_modules() == ("psann", "sweeps")
    assert is_trusted("psann.data.sequence_market_dataset") and is_trusted("sweeps.results:load")
    assert not is_trusted("psannx.evil") and not is_trusted("os.system") and not is_trusted("sweeps_evil:f")
    assert import_callable("psann.data.sequence_market_dataset", "data.loader").__name__ == "sequence_market_dataset"


@pytest.mark.parametrize("path", ["os.system", "os:system", "subprocess.run", "builtins.eval", "no_such_module.f"])
def test_an_untrusted_path_is_refused_before_it_is_imported(no_trust, path):
    module = path.replace(":", ".").split(".")[0]
    before = module in sys.modules
    with pytest.raises(ValidationError) as info:
        import_callable(path, "data.loader")
    assert info.value.key == "data.loader"
    assert "outside the trusted modules" in str(info.value) and f"--trust {module}" in str(info.value)
    assert (module in sys.modules) == before  # nothing was imported to find out


@pytest.mark.parametrize("path", ["psann._imports.os.system", "psann._imports.importlib.import_module", "psann.training.torch.load"])
def test_a_trusted_modules_own_imports_do_not_open_a_way_out(no_trust, path):
    with pytest.raises(UntrustedImportError, match="outside the trusted modules"):
        import_object(path)


def test_a_module_that_is_not_yet_imported_is_not_imported_to_refuse_it(no_trust):
    code = (
        "import sys; from psann._imports import import_callable\n"
        "try:\n    import_callable('json.tool.main', 'data.loader')\n"
        "except ValueError as e:\n    print('refused', 'json.tool' in sys.modules)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != TRUST_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "refused False"


def test_trust_adds_modules_for_this_process_and_its_children(no_trust, monkeypatch):
    assert trust(["json", "email.utils"]) == ("psann", "sweeps", "json", "email.utils")
    assert import_callable("json.dumps", "hisso.reward")({"a": 1}) == '{"a": 1}'
    assert import_object("email.utils:parseaddr")("a <b@c>") == ("a", "b@c")
    with pytest.raises(UntrustedImportError):
        import_object("email.header.Header")  # a sibling of a trusted module is not trusted
    child = subprocess.run(
        [sys.executable, "-c", "from psann._imports import trusted_modules as t; print(','.join(t()))"],
        capture_output=True, text=True, check=True,
    )
    assert child.stdout.strip() == "psann,sweeps,json,email.utils"


def test_the_environment_variable_trusts_modules(no_trust, monkeypatch):
    monkeypatch.setenv(TRUST_ENV, " json , ")
    assert trusted_modules() == ("psann", "sweeps", "json")
    assert import_callable("json:loads", "data.loader")("[1]") == [1]


@pytest.mark.parametrize("bad", ["", "a b", "1abc", "a..b", "a;rm", 7])
def test_trust_refuses_what_is_not_a_module_name(no_trust, bad):
    with pytest.raises(ValidationError) as info:
        trust([bad])
    assert info.value.key == "--trust"


def test_saving_names_a_callable_the_caller_holds_without_trust(no_trust):
    import json

    assert import_path_of(json.dumps, "hisso.reward") == "json:dumps"
    with pytest.raises(UntrustedImportError):  # but loading that path back needs trust
        import_object("json:dumps")
