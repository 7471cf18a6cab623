"""Bad input, fuzzed (issue #15 items 2 and 8): run configs and datasets.

A known-good run config is mutated at every key path (wrong types, NaN/inf, negative, zero, huge,
empty, 10 000-character strings, deletions, unknown sibling keys) and npz datasets are broken
(truncated, wrong keys, dtypes, ndim, NaN, mismatched lengths, empty, pickled objects). Each case
goes through the CLI's ``main(argv)`` in-process, up to the point where it would create the run
folder (``prepare_run_dir`` is replaced by a stop), and must end one of two ways:

- accepted: validation passed and the dataset loaded (no training runs here);
- refused: exit 2 with exactly one ``error: <key>: ...`` line on stderr, shorter than 500
  characters, whose key is the mutated key path or an ancestor or descendant of it.

Never a traceback, never exit 1, never a run folder. Hypothesis draws the cases (derandomized, so
CI sees the same ones); the ``slow`` variant tries every case and prints the figures.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psann import runs
from psann.contract import EXIT_BAD_INPUT
from psann.runconfig import ConfigError
from psann.scripts import hisso_log_run

ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIGS = ("dense_cpu_smoke.yaml", "wave_resnet_local.yaml")
MAX_LINE = 500
LONG = "x" * 10_000

# What a leaf is replaced with: wrong types, non-finite, negative, zero, huge, empty, long.
MUTANTS: tuple[Any, ...] = (
    "abc", True, None, -1, 0, -2.5, 0.5, math.nan, math.inf, -math.inf, 10**30, 2**63, -(2**63),
    "", [], {}, [1, 2], {"zz": 1}, LONG, "two\nlines",
)
DELETE, SIBLING = "<delete>", "<unknown sibling>"


# -- key paths -----------------------------------------------------------------------------------

def key_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path in a parsed config: mappings by key, lists by index (the node itself first)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from key_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from key_paths(value, prefix + (index,))


def path_text(parts: tuple) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _tokens(key: str) -> list[str]:
    return [t for t in re.split(r"\.|(?=\[)", key) if t]


def related(error_key: str, mutated: str) -> bool:
    """Whether ``error_key`` is ``mutated``, an ancestor of it or a descendant of it."""
    a, b = _tokens(error_key), _tokens(mutated)
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def mutate(raw: dict, parts: tuple, op: Any) -> dict:
    result = copy.deepcopy(raw)
    node = result
    for part in parts[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
            node[part] = {}  # an absent section (hisso.supervised) is created to hold the mutant
        node = node[part]
    last = parts[-1]
    if op == DELETE:
        del node[last]
    elif op == SIBLING:
        if isinstance(node, dict):
            node["zz_unknown_key"] = 1
        else:
            node.append("zz_unknown_item")
    else:
        node[last] = op
    return result


def sibling_path(raw: dict, parts: tuple) -> tuple:
    """Where mutate() puts the unknown sibling of ``parts``."""
    parent = raw
    for part in parts[:-1]:
        parent = parent[part]
    return parts[:-1] + (("zz_unknown_key",) if isinstance(parent, dict) else (len(parent),))


def absent_paths(raw: dict) -> list[tuple]:
    """Settings the config leaves at their defaults: every estimator parameter, HISSO option and
    warm-start option it does not set, and the optional training and evaluation keys."""
    from psann.hisso.options import HISSOOptions, WarmStartOptions
    from psann.runconfig import resolve_estimator_class

    params = resolve_estimator_class(raw["estimator"]["target"])._get_param_names()
    paths = [("estimator", "params", name) for name in params]
    paths += [("hisso", f.name) for f in dataclasses.fields(HISSOOptions)] + [("hisso", "trans_cost")]
    paths += [("hisso", "supervised", f.name) for f in dataclasses.fields(WarmStartOptions) if f.name != "y"]
    paths += [("training", "keep_checkpoints"), ("evaluation", "split")]
    present = set(key_paths(raw))
    return [p for p in paths if p not in present]


def run_cases(name: str) -> list[tuple[str, tuple, Any]]:
    raw = yaml.safe_load((ROOT / "configs" / "hisso" / name).read_text())
    cases = []
    for parts in key_paths(raw):
        for op in (DELETE, SIBLING, *MUTANTS):
            cases.append((name, parts, op))
    for parts in absent_paths(raw):
        for op in MUTANTS:
            cases.append((name, parts, op))
    return cases


RUN_CASES = [case for name in BASE_CONFIGS for case in run_cases(name)]


# -- running the CLI up to the run folder ----------------------------------------------------------

class _WouldStart(Exception):
    """Raised in place of prepare_run_dir: validation passed, a run would start."""


def cli_outcome(argv: list[str], out_dir: Path) -> tuple[str, int | None, str]:
    """Run hisso_log_run.main(argv) until it would create the run folder.

    Returns ("accepted", None, stderr) or ("exit", code, stderr). A dataset the CLI could not load
    (load_dataset raising anything but ConfigError: the run would fail with exit 1 later) is
    reported as ("load_failed", None, repr(exc)).
    """
    crashes: list[BaseException] = []
    real_load = runs.load_dataset

    def watched_load(config):
        try:
            return real_load(config)
        except ConfigError:
            raise
        except Exception as exc:
            crashes.append(exc)
            raise

    def stop(*args, **kwargs):
        raise _WouldStart

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hisso_log_run, "prepare_run_dir", stop)
        mp.setattr(hisso_log_run, "load_dataset", watched_load)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = hisso_log_run.main(argv)
            except _WouldStart:
                if crashes:
                    return "load_failed", None, repr(crashes[0])
                return "accepted", None, err.getvalue()
            except SystemExit as exc:  # argparse
                code = exc.code
    assert not out_dir.exists() or not any(out_dir.iterdir()), f"a run folder was created: {list(out_dir.iterdir())}"
    return "exit", code, err.getvalue()


def refusal_key(code: int | None, stderr: str) -> str:
    """Check a refusal's form (exit 2, one short error line, no traceback) and return its key."""
    assert "Traceback" not in stderr, stderr
    assert code == EXIT_BAD_INPUT, f"exit {code}, stderr: {stderr[-2000:]}"
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one error line, got: {stderr[-2000:]}"
    line = errors[0]
    assert len(line) < MAX_LINE, f"error line of {len(line)} chars: {line[:300]}..."
    return line[len("error: "):].split(": ", 1)[0]


def check_run_case(name: str, parts: tuple, op: Any, tmp: Path) -> str:
    """One mutated run config through the CLI; returns "accepted" or "refused"."""
    source = ROOT / "configs" / "hisso" / name
    raw = yaml.safe_load(source.read_text())
    mutated = mutate(raw, parts, op)
    config = tmp / name  # data paths in these configs are loaders, not files: no relative path breaks
    config.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    out_dir = tmp / "runs"
    outcome, code, stderr = cli_outcome(["--config", str(config), "--output-dir", str(out_dir)], out_dir)
    assert outcome != "load_failed", f"{path_text(parts)} <- {op!r:.60}: the dataset failed to load outside validation: {stderr}"
    if outcome == "accepted":
        return "accepted"
    key = refusal_key(code, stderr)
    where = path_text(sibling_path(raw, parts) if op == SIBLING else parts)
    line = stderr.splitlines()[-1]
    ok = related(key, where)
    if not ok and _tokens(key)[:-1] == _tokens(where)[:-1] and _tokens(where)[-1] in line:
        # A rule between two settings (progressive_depth_interval needs progressive_depth_initial)
        # is keyed by the sibling to change, naming the mutated one.
        ok = True
    if not ok and key == "data.loader" and where.startswith("data.kwargs."):
        # A loader that is not ours may report an argument problem as its own error naming the
        # argument; psann's loaders name it (data.kwargs.<argument>, psann.runs.load_dataset).
        argument = _tokens(where)[2]
        ok = argument in line
    assert ok, f"mutated {where} <- {op!r:.60}, but the error names {key!r}: {line[:300]}"
    return "refused"


# -- run configs ---------------------------------------------------------------------------------

@settings(derandomize=True, max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(RUN_CASES))
def test_mutated_run_config_is_accepted_or_refused_at_its_key(case, tmp_path_factory):
    check_run_case(*case, tmp_path_factory.mktemp("case"))


@pytest.mark.slow
def test_every_mutated_run_config_is_accepted_or_refused_at_its_key(tmp_path_factory):
    figures = {"cases": 0, "accepted": 0, "refused": 0}
    failures = []
    for case in RUN_CASES:
        figures["cases"] += 1
        try:
            figures[check_run_case(*case, tmp_path_factory.mktemp("case"))] += 1
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:300])
    print(f"\nrun-config fuzz: {figures}, failures {len(failures)}")
    assert not failures, "\n".join(failures)


# -- npz datasets --------------------------------------------------------------------------------

def _good_arrays() -> dict[str, np.ndarray]:
    from psann.data import toy_hisso_dataset

    return {key: value for key, value in toy_hisso_dataset(steps=200, features=3, seed=0).items()}


def _save(path: Path, arrays: dict[str, Any], pickle: bool = False) -> None:
    with open(path, "wb") as handle:
        if pickle:  # np.savez pickles object arrays silently; the loader must refuse them
            np.savez(handle, **arrays)
        else:
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})


def _with(key: str, value: Any) -> Any:
    return lambda arrays: {**arrays, key: value}


def _without(key: str) -> Any:
    return lambda arrays: {k: v for k, v in arrays.items() if k != key}


def _changed(key: str, change: Any) -> Any:
    return lambda arrays: {**arrays, key: change(np.array(arrays[key]))}


def _set_first(value: float) -> Any:
    def change(array: np.ndarray) -> np.ndarray:
        array.flat[0] = value
        return array
    return change


# (name, edit of the good arrays, the dataset key the error line must name or None: the file)
ARRAY_FAULTS: list[tuple[str, Any, str | None]] = [
    ("unknown key", _with("X_trian", np.zeros((10, 3))), "X_trian"),
    ("long unknown key", _with("X" * 5000, np.zeros((10, 3))), None),
    ("missing X_train", _without("X_train"), "X_train"),
    ("X_test missing but y_test given", _without("X_test"), "X_test"),
    ("object dtype", _with("X_train", np.array([[1, "a"]] * 120, dtype=object)), None),
    ("string dtype", _with("X_train", np.array([["a", "b", "c"]] * 120)), "X_train"),
    ("bytes dtype", _with("y_train", np.array([b"ab"] * 120)), "y_train"),
    ("complex dtype", _with("X_val", np.ones((40, 3), dtype=complex)), "X_val"),
    ("0-d X", _with("X_train", np.array(1.0)), "X_train"),
    ("1-d X", _with("X_train", np.ones(120)), "X_train"),
    ("5-d X", _with("X_train", np.ones((120, 1, 1, 1, 3))), "X_train"),
    ("3-d prices", _with("prices_train", np.ones((120, 2, 1))), "prices_train"),
    ("NaN in X", _changed("X_train", _set_first(np.nan)), "X_train"),
    ("inf in y", _changed("y_val", _set_first(np.inf)), "y_val"),
    ("-inf in prices", _changed("prices_test", _set_first(-np.inf)), "prices_test"),
    ("zero price", _changed("prices_train", _set_first(0.0)), "prices_train"),
    ("negative price", _changed("prices_val", _set_first(-1.0)), "prices_val"),
    ("short y", _changed("y_train", lambda a: a[:-1]), "y_train"),
    ("short prices", _changed("prices_test", lambda a: a[:-3]), "prices_test"),
    ("wider X_val", _changed("X_val", lambda a: np.hstack([a, a])), "X_val"),
    ("narrower prices_val", _changed("prices_val", lambda a: a[:, :1]), "prices_val"),
    ("empty X_train", _with("X_train", np.zeros((0, 3))), "X_train"),
    ("empty columns", _with("y_train", np.zeros((120, 0))), "y_train"),
    ("empty everything", lambda arrays: {k: np.zeros((0,) + v.shape[1:]) for k, v in arrays.items()}, None),
    ("no arrays", lambda arrays: {}, "X_train"),
    ("train shorter than the window", lambda arrays: {
        k: (v[:10] if k.endswith("_train") else v) for k, v in arrays.items()}, "hisso.window"),
]

# (name, writer of a broken file)
FILE_FAULTS: list[tuple[str, Any]] = [
    ("empty file", lambda path, good: path.write_bytes(b"")),
    ("text file", lambda path, good: path.write_text("X_train,y_train\n1,2\n")),
    ("npy, not npz", lambda path, good: np.save(open(path, "wb"), np.ones((5, 3)))),
    ("zip of garbage", lambda path, good: _zip(path, {"X_train.npy": b"not an array"})),
    ("pickle", lambda path, good: path.write_bytes(__import__("pickle").dumps({"X_train": [1, 2]}))),
    ("pickled object arrays", lambda path, good: _save(path, {**good, "X_train": np.array([object()] * 120, dtype=object)}, pickle=True)),
]


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npz_config(tmp: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "hisso" / "dense_cpu_smoke.yaml").read_text())
    raw["data"] = {"npz": "data.npz"}
    raw["hisso"]["window"] = 16
    config = tmp / "npz_run.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def check_npz_case(tmp: Path, write: Any, names: str | None) -> str:
    """One broken npz through the CLI; it must be refused at data.npz (or the named key)."""
    config = _npz_config(tmp)
    write(tmp / "data.npz")
    out_dir = tmp / "runs"
    outcome, code, stderr = cli_outcome(["--config", str(config), "--output-dir", str(out_dir)], out_dir)
    assert outcome == "exit", f"not refused before the run: {outcome} {stderr[:300]}"
    key = refusal_key(code, stderr)
    line = [l for l in stderr.splitlines() if l.startswith("error: ")][0]
    assert key in ("data.npz", "data", names or "data.npz"), line[:300]
    if names is not None:
        assert names in line, f"the error does not name {names}: {line[:300]}"
    return "refused"


def _array_writer(edit: Any) -> Any:
    def write(path: Path) -> None:
        _save(path, edit(_good_arrays()))
    return write


def _truncated_writer(fraction: float) -> Any:
    def write(path: Path) -> None:
        _save(path, _good_arrays())
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
    return write


NPZ_CASES = (
    [(f"array: {name}", _array_writer(edit), names) for name, edit, names in ARRAY_FAULTS]
    + [(f"file: {name}", (lambda w: lambda path: w(path, _good_arrays()))(writer), None) for name, writer in FILE_FAULTS]
)


def test_good_npz_is_accepted(tmp_path):
    _save(tmp_path / "data.npz", _good_arrays())
    outcome, code, stderr = cli_outcome(["--config", str(_npz_config(tmp_path)), "--output-dir", str(tmp_path / "runs")],
                                        tmp_path / "runs")
    assert outcome == "accepted", stderr


@pytest.mark.parametrize("name, write, names", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_broken_npz_is_refused_at_data_npz(name, write, names, tmp_path):
    check_npz_case(tmp_path, write, names)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_npz_is_refused_at_data_npz(fraction, tmp_path_factory):
    check_npz_case(tmp_path_factory.mktemp("npz"), _truncated_writer(fraction), None)


def test_pickled_npz_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the loader unpickled a dataset")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    _save(tmp_path / "data.npz", {**_good_arrays(), "X_train": np.array([object()] * 120, dtype=object)}, pickle=True)
    check_npz_case(tmp_path, lambda path: None, None)


# -- the defects the fuzzing found, one by one -------------------------------------------------------

FOUND = [
    # (config, key path, value, the key the error must name, a fragment of its line)
    ("dense_cpu_smoke.yaml", ("estimator", "params", "random_state"), 2**32, "estimator.params.random_state", "4294967295"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "learnable"), "sometimes", "estimator.params.learnable", "'all'"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "learnable"), ["amplitude", "phase"], "estimator.params.learnable", "'all'"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "activation_bounds"), {"amplitude": [2, 1]}, "estimator.params.activation_bounds", "low <= high"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "activation_bounds"), {"phase": [0, 1]}, "estimator.params.activation_bounds", "amplitude"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "hidden_units"), 10**30, "estimator.params.hidden_units", "2**31 - 1"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "epochs"), 2**63, "estimator.params.epochs", "2**31 - 1"),
    ("dense_cpu_smoke.yaml", ("estimator", "params", "zz"), 1, "estimator.params.zz", "unknown key"),
    ("dense_cpu_smoke.yaml", ("hisso", "batch_episodes"), 2**63, "hisso.batch_episodes", "2147483647"),
    ("dense_cpu_smoke.yaml", ("hisso", "eval_seed"), 2**32, "hisso.eval_seed", "4294967295"),
    ("dense_cpu_smoke.yaml", ("hisso", "reward"), LONG, "hisso.reward", "unknown reward"),
    ("dense_cpu_smoke.yaml", ("hisso", "trans_cost"), LONG, "hisso.trans_cost", "conflicts"),
    ("dense_cpu_smoke.yaml", ("training", "verbose"), 10**30, "training.verbose", "int >= 0"),
    ("dense_cpu_smoke.yaml", ("data", "kwargs", "zz"), 1, "data.kwargs.zz", "unknown key"),
    ("dense_cpu_smoke.yaml", ("data", "kwargs", "seed"), -1, "data.loader", "seed: expected an int in [0, 2**32)"),
    ("dense_cpu_smoke.yaml", ("data", "kwargs", "seed"), 2**32, "data.loader", "seed: expected an int in [0, 2**32)"),
    ("dense_cpu_smoke.yaml", ("data", "kwargs", "steps"), 10**30, "data.loader", "steps: expected an int in [6, 2147483647]"),
    ("dense_cpu_smoke.yaml", ("data", "kwargs", "steps"), 10**8, "data.loader", "steps: 100000000 x 6 x 3"),
    ("wave_resnet_local.yaml", ("data", "kwargs", "features"), 2**63, "data.loader", "features: expected an int in"),
    ("dense_cpu_smoke.yaml", ("data",), {"npz": LONG}, "data.npz", "expected a file path"),
    ("dense_cpu_smoke.yaml", ("data",), {"loader": "psann.data.price_table_dataset", "kwargs": {"path": LONG}},
     "data.kwargs.path", "expected a file path"),
    ("dense_cpu_smoke.yaml", ("data",), {"loader": "psann.data.price_table_dataset"}, "data.kwargs.path", "missing"),
    ("wave_resnet_local.yaml", ("estimator", "params", "hidden_layers"), -1, "estimator.params.hidden_layers", "int >= 0"),
    ("wave_resnet_local.yaml", ("estimator", "params", "hidden_width"), "abc", "estimator.params.hidden_width", "int >= 1"),
]


@pytest.mark.parametrize("name, parts, value, key, fragment", FOUND, ids=[f"{path_text(c[1])}={c[2]!r:.20}" for c in FOUND])
def test_found_defect_is_refused_at_its_key(name, parts, value, key, fragment, tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "hisso" / name).read_text())
    config = tmp_path / name
    config.write_text(yaml.safe_dump(mutate(raw, parts, value)))
    out_dir = tmp_path / "runs"
    outcome, code, stderr = cli_outcome(["--config", str(config), "--output-dir", str(out_dir)], out_dir)
    assert outcome == "exit", f"not refused: {outcome} {stderr[:300]}"
    named = refusal_key(code, stderr)
    # psann's loaders name the argument (data.kwargs.<argument>); the FOUND table may say data.loader.
    assert named == key or (key == "data.loader" and named == path_text(parts)), stderr
    assert fragment in stderr


# -- defects found by the fuzzing in files outside its first change, now fixed ---------------------

def test_run_cli_names_a_bad_loader_argument_at_its_data_kwargs_key(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "hisso" / "dense_cpu_smoke.yaml").read_text())
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(mutate(raw, ("data", "kwargs", "steps"), -1)))
    outcome, code, stderr = cli_outcome(["--config", str(config), "--output-dir", str(tmp_path / "runs")], tmp_path / "runs")
    assert refusal_key(code, stderr) == "data.kwargs.steps"


def test_unknown_reward_error_cuts_a_long_name_short():
    from psann.errors import ValidationError
    from psann.hisso.rewards import resolve_reward

    with pytest.raises(ValidationError) as info:
        resolve_reward(LONG)
    assert len(str(info.value)) < MAX_LINE


@pytest.mark.parametrize("section", ["estimator", "estimator.params", "hisso", "hisso.supervised", "data.kwargs",
                                     "training", "evaluation", ""])
def test_a_long_unknown_key_is_named_in_one_short_line(section, tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "hisso" / "dense_cpu_smoke.yaml").read_text())
    raw["hisso"]["supervised"] = {"epochs": 1}
    node = raw
    for part in filter(None, section.split(".")):
        node = node[part]
    node[LONG] = 1
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    outcome, code, stderr = cli_outcome(["--config", str(config), "--output-dir", str(tmp_path / "runs")], tmp_path / "runs")
    key = refusal_key(code, stderr)
    assert related(key, section) if section else key.startswith("'xxx")
