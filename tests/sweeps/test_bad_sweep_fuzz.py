"""Bad sweep files, fuzzed (issue #15 items 2 and 8).

The default sweep file (configs/sweeps/hisso_wave.yaml, its base configs named by absolute path)
is mutated at every key path: wrong types, NaN/inf, negative, zero, huge, empty, 10 000-character
strings, deletions and unknown sibling keys, in stages, schedulers, resources, pass rules,
budgets, search-space choices and bounds, overrides and profiles. Each case runs
``sweeps.hisso_wave.main(["--sweep", F, "--dry-run"])`` in-process with ``ray.init`` replaced by
a failure, and must end one of two ways:

- accepted: exit 0 (the dry run validated the file and every trial config, dataset included);
- refused: exit 2 with exactly one ``error: <key>: ...`` line on stderr, shorter than 500
  characters, naming the mutated key path (``stages[0].epochs`` may be named
  ``stages.smoke.epochs``; a profile's stage setting the stage's own key), or an ancestor or
  descendant of it.

Never a traceback, never Ray, never a sweep folder. The ``slow`` variant tries every case and
prints the figures.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psann.contract import EXIT_BAD_INPUT, EXIT_OK

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "configs" / "sweeps" / "hisso_wave.yaml"
MAX_LINE = 500
LONG = "x" * 10_000
MUTANTS: tuple[Any, ...] = (
    "abc", True, None, -1, 0, -2.5, 0.5, math.nan, math.inf, -math.inf, 10**30, 2**63, -(2**63),
    "", [], {}, [1, 2], {"zz": 1}, LONG, "two\nlines",
)
DELETE, SIBLING = "<delete>", "<unknown sibling>"


def _raw() -> dict:
    raw = yaml.safe_load(SWEEP.read_text())
    # Absolute base configs, so the mutated file can live in a temporary folder.
    raw["base_config"] = str((SWEEP.parent / raw["base_config"]).resolve())
    local = raw["profiles"]["local"]
    local["base_config"] = str((SWEEP.parent / local["base_config"]).resolve())
    return raw


def key_paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
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
    a, b = _tokens(error_key), _tokens(mutated)
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def other_names(raw: dict, parts: tuple) -> list[tuple]:
    """Other spellings of a key path in errors: ``stages[0].x`` as ``stages.smoke.x``, and a
    profile's ``profiles.local.stages.hisso.x`` / ``profiles.local.x`` as ``stages.hisso.x`` / ``x``."""
    names = [parts]
    if len(parts) >= 2 and parts[0] == "stages" and isinstance(parts[1], int):
        stage = raw["stages"][parts[1]]
        if isinstance(stage, dict) and isinstance(stage.get("name"), str):
            names.append(("stages", stage["name"]) + parts[2:])
    if len(parts) >= 3 and parts[0] == "profiles":
        rest = parts[2:]
        names.append(rest)
        stage_names = [s.get("name") for s in raw.get("stages") or [] if isinstance(s, dict)]
        if len(rest) >= 2 and rest[0] == "stages" and rest[1] in stage_names:
            names.append(("stages", stage_names.index(rest[1])) + rest[2:])
    return names


def mutate(raw: dict, parts: tuple, op: Any) -> tuple[dict, tuple]:
    """The mutated sweep and the key path the mutation is at (an unknown sibling's own path)."""
    result = copy.deepcopy(raw)
    node = result
    for part in parts[:-1]:
        node = node[part]
    last = parts[-1]
    if op == DELETE:
        del node[last]
    elif op == SIBLING:
        if isinstance(node, dict):
            node["zz_unknown_key"] = 1
            return result, parts[:-1] + ("zz_unknown_key",)
        node.append("zz_unknown_item")
        return result, parts[:-1] + (len(node) - 1,)
    else:
        node[last] = op
    return result, parts


# Each case with the local profile (the default without --address) and without a profile: the
# profile replaces some of the file's values, which a cluster run (--profile none) reads.
SWEEP_CASES = [
    (parts, op, profile) for profile in ("local", "none") for parts in key_paths(_raw())
    for op in (DELETE, SIBLING, *MUTANTS)
]


def sweep_outcome(sweep: Path, tmp: Path, profile: str = "local") -> tuple[int, str]:
    """sweeps.hisso_wave.main on ``sweep`` with --dry-run; Ray must not start."""
    import ray

    from sweeps import hisso_wave

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init was called")

    err = io.StringIO()
    storage = tmp / "storage"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray, "init", no_ray)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = hisso_wave.main(
                    ["--sweep", str(sweep), "--dry-run", "--storage", str(storage), "--profile", profile])
            except SystemExit as exc:
                code = exc.code
    assert not storage.exists() or not any(storage.iterdir()), "a sweep folder was created"
    return code, err.getvalue()


def check_sweep_case(parts: tuple, op: Any, profile: str, tmp: Path) -> str:
    raw = _raw()
    mutated, where_parts = mutate(raw, parts, op)
    sweep = tmp / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False))
    code, stderr = sweep_outcome(sweep, tmp, profile)
    assert "Traceback" not in stderr, stderr[-3000:]
    if code == EXIT_OK:
        return "accepted"
    assert code == EXIT_BAD_INPUT, f"[{profile}] {path_text(parts)} <- {op!r:.60}: exit {code}: {stderr[-2000:]}"
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"[{profile}] {path_text(parts)} <- {op!r:.60}: expected one error line, got {stderr[-2000:]}"
    line = errors[0]
    assert len(line) < MAX_LINE, f"[{profile}] {path_text(parts)} <- {op!r:.60}: error line of {len(line)} chars: {line[:300]}"
    key = line[len("error: "):].split(": ", 1)[0]
    names = [path_text(p) for p in other_names(mutated if op != DELETE else raw, where_parts)]
    if where_parts[0] == "stages" and (len(where_parts) <= 2 or where_parts[2:] == ("name",)):
        # A stage removed or replaced whole: the profile that updates it by name is refused.
        names.append("profiles.local.stages")
    cross = any(_tokens(key)[: len(_tokens(n)) - 1] == _tokens(n)[:-1] and _tokens(n)[-1] in line for n in names)
    # A rule between two settings (ASHA's max_t against the stage's epochs) is keyed by the one to
    # change, naming the mutated one in its reason.
    assert cross or any(related(key, name) for name in names), (
        f"[{profile}] mutated {path_text(where_parts)} <- {op!r:.60}, but the error names {key!r}: {line[:300]}")
    return "refused"


@settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(SWEEP_CASES))
def test_mutated_sweep_file_is_accepted_or_refused_at_its_key(case, tmp_path_factory):
    check_sweep_case(*case, tmp_path_factory.mktemp("sweep"))


@pytest.mark.slow
def test_every_mutated_sweep_file_is_accepted_or_refused_at_its_key(tmp_path_factory):
    figures = {"cases": 0, "accepted": 0, "refused": 0}
    failures = []
    for case in SWEEP_CASES:
        figures["cases"] += 1
        try:
            figures[check_sweep_case(*case, tmp_path_factory.mktemp("sweep"))] += 1
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0][:300])
    print(f"\nsweep-file fuzz: {figures}, failures {len(failures)}")
    assert not failures, "\n".join(failures)


# -- the defects the fuzzing found, one by one -------------------------------------------------------

FOUND = [
    # (key path, value, profile, the key the error must name, a fragment of its line)
    (("profiles",), "abc", "local", "profiles", "expected a mapping"),  # was an AttributeError traceback
    (("stages",), 5, "local", "stages", "non-empty list"),  # was a TypeError traceback
    (("stages", 0), "abc", "local", "stages[0]", "a mapping of stage settings"),  # was a ValueError traceback
    (("stages", 1, "name"), "Bad-name", "local", "stages[1].name", "letters, digits"),
    (("profiles", "local", "base_config"), LONG, "local", "base_config", "a path to a run config"),  # OSError
    (("stages", 0, "num_samples"), 10**30, "local", "stages.smoke.num_samples", "2147483647"),
    (("repeats",), 2**63, "none", "repeats", "2147483647"),
    # Loader arguments of the trials' configs are checked before Ray, not in every trial:
    (("stages", 0, "overrides", "data.kwargs.steps"), -1, "local", "stages.smoke.overrides.data.kwargs.steps", "int >= 6"),
    (("stages", 0, "overrides", "data.kwargs.seed"), 2**32, "none", "stages.smoke.overrides.data.kwargs.seed", "2**32"),
    (("stages", 0, "overrides", "hisso.window"), 10_000, "local", "stages.smoke.overrides.hisso.window", "longer than X_train"),
]


@pytest.mark.parametrize("parts, value, profile, key, fragment", FOUND, ids=[f"{path_text(c[0])}={c[1]!r:.20}" for c in FOUND])
def test_found_defect_is_refused_at_its_key(parts, value, profile, key, fragment, tmp_path):
    mutated, _ = mutate(_raw(), parts, value)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(mutated, sort_keys=False))
    code, stderr = sweep_outcome(sweep, tmp_path, profile)
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code == EXIT_BAD_INPUT and len(errors) == 1, stderr[-2000:]
    assert errors[0].startswith(f"error: {key}: ") and fragment in errors[0], errors[0][:300]
    assert len(errors[0]) < MAX_LINE
