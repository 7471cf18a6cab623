"""Sweep-file schema: loading, profiles, validation with key paths, search-space translation.

A sweep file (configs/sweeps/*.yaml)::

    name: hisso_wave
    base_config: ../hisso/wave_resnet_small.yaml      # relative to the sweep file
    seed: 42                                          # seeds the search and the runs (a config's random_state wins)
    hang_timeout_s: 600                               # a trial that writes nothing this long is stopped as HUNG
    search: random                                    # or optuna (TPE through Ray Tune's OptunaSearch)
    repeats: 1                                        # runs per configuration, seeds seed + 0..repeats-1
    rank_window: 3                                    # trials rank by the mean val_loss of their last 3 epochs
    top_k: 3                                          # the top trials of each stage evaluated on the test split
    report: {every_epochs: 10, every_seconds: 120}    # Tune report + checkpoint cadence (and ASHA rungs)
    search_space:                                     # dotted paths into the run config
      estimator.params.lr: {loguniform: [0.0003, 0.003]}
      hisso.window: {grid: [32, 48]}
    stages:
      - name: smoke
        resources: {cpu: 1, gpu: 0}
        num_samples: 2
        epochs: 2
        scheduler: none
        pass_rule: {min_success_fraction: 1.0}
      - name: hisso
        resources: {cpu: 1, gpu: 1}
        num_samples: 8
        epochs: 60
        scheduler: {type: asha, max_t: 60, grace_period: 5, reduction_factor: 3}
        epoch_seconds: 4.5                            # one epoch of one trial, for --dry-run's estimate
        budget: {gpu_hours: 2.0, wall_minutes: 90}    # stop launching trials past either (sweeps.budget)
    profiles:
      local: {stages: {hisso: {resources: {gpu: 0}, allow_cpu: true, num_samples: 4}}}

Every error is a ``SweepError`` (a :class:`psann.errors.ValidationError`): ``err.key`` is the
sweep-file key path (``stages[1].num_sample``, ``stages.hisso.scheduler.grace``,
``search_space.estimator.params.lr``). A run-config error found while checking trial configs is
re-keyed from its ``.key`` and kept as ``err.__cause__``.

Importing this module does not import Ray; ``to_param_space`` imports ``ray.tune`` when called.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from psann.configfile import read_config
from psann.contract import RANK_WINDOW
from psann.data import COUNT_LIMIT, check_seed  # the project's one seed bound: 0 <= seed < 2**32
from psann.errors import ValidationError, short_repr, unknown_key
from psann.names import check_folder_name
from psann.runconfig import ConfigError, apply_overrides, load_config_file, parse_run_config
from sweeps.budget import BudgetSpec, parse_budget, parse_epoch_seconds

__all__ = [
    "ReportSpec",
    "SchedulerSpec",
    "StageSpec",
    "SweepError",
    "SweepSpec",
    "load_sweep",
    "parse_sweep",
    "to_param_space",
    "validate_trial_configs",
]

SEARCH_KINDS = ("choice", "uniform", "loguniform", "randint", "grid")
_TOP_KEYS = (
    "name", "base_config", "seed", "hang_timeout_s", "search", "repeats", "rank_window", "top_k", "report",
    "search_space", "stages", "profiles",
)
SEARCH_ALGORITHMS = ("random", "optuna")
_REPORT_KEYS = ("every_epochs", "every_seconds")
_STAGE_KEYS = (
    "name",
    "resources",
    "num_samples",
    "epochs",
    "scheduler",
    "max_concurrent_trials",
    "pass_rule",
    "overrides",
    "max_failures",
    "allow_cpu",
    "report",
    "epoch_seconds",
    "budget",
)
_SCHEDULER_KEYS = ("type", "max_t", "grace_period", "reduction_factor")


class SweepError(ValidationError):
    """A sweep-file problem: ``SweepError(key, reason)``; ``err.key`` is the sweep-file key path."""


def _unknown(key: Any, allowed: tuple[str, ...], prefix: str) -> SweepError:
    return unknown_key(key, allowed, prefix, error=SweepError)  # type: ignore[return-value]


def _int(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SweepError.expected(key, f"an int >= {low}", value)
    if value > COUNT_LIMIT:  # 10**30 samples is a typo that Ray would meet only after it started
        raise SweepError.expected(key, f"an int in [{low}, {COUNT_LIMIT}]", value)
    return value


def _number(value: Any, key: str, low: float, high: float | None = None) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise SweepError.expected(key, f"a number {bounds}", value)
    return float(value)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError.expected(key, "a mapping", value)
    return dict(value)


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA on val_loss (mode min), or none."""

    kind: str = "none"  # "asha" or "none"
    max_t: int | None = None  # ASHA: the most epochs a trial may run (default: the stage's epochs)
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped (parsed default: default_grace_period)
    reduction_factor: int = 2  # ASHA: keep 1/reduction_factor of trials at each rung

    def milestones(self) -> tuple[int, ...]:
        """The epochs at which ASHA compares trials (its rungs), smallest first; () without ASHA.

        Ray's ASHA puts rungs at grace_period * reduction_factor**k below max_t; every trial
        reports at these epochs whatever its report cadence, so pruning does not depend on it.
        """
        if self.kind != "asha" or self.max_t is None:
            return ()
        rungs, t = [], self.grace_period
        while t < self.max_t:
            rungs.append(t)
            t *= self.reduction_factor
        return tuple(rungs)


@dataclass(frozen=True)
class ReportSpec:
    """How often a trial reports to Tune and checkpoints: every N epochs or T seconds, whichever first.

    ASHA's rungs and the last epoch are always reported. A lost node costs at most the work since
    the last report: N epochs or T seconds of one trial, whichever is less.
    """

    every_epochs: int = 10  # 1.15x the run alone (1.29x at 5, 1.39x at 1): bench/sweep_overhead.py
    every_seconds: float | None = 120.0

    def due(self, epochs_since: int, seconds_since: float) -> bool:
        """Whether to report now, given the epochs and seconds since the last report."""
        if epochs_since >= self.every_epochs:
            return True
        return self.every_seconds is not None and seconds_since >= self.every_seconds


@dataclass(frozen=True)
class StageSpec:
    """One Tune experiment of the sweep."""

    name: str
    cpu: float = 1.0  # CPUs per trial
    gpu: float = 0.0  # GPUs per trial (fractions allowed)
    num_samples: int = 1  # samples of the search space (times the grid size)
    epochs: int | None = None  # overrides estimator.params.epochs
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    max_concurrent_trials: int | None = None  # None: as many as resources allow
    min_success_fraction: float = 1.0  # pass rule: share of trials that must not fail or hang
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted-path run-config overrides
    max_failures: int = 1  # retries of a trial after a failure (a lost node), from its checkpoint
    allow_cpu: bool = False  # run a GPU stage on CPU when no GPU can be had (also --allow-cpu)
    report: ReportSpec = field(default_factory=ReportSpec)  # report and checkpoint cadence
    epoch_seconds: float | None = None  # one epoch of one trial, for the spend estimate (sweeps.budget)
    budget: BudgetSpec | None = None  # stop launching trials past gpu_hours / wall_minutes

    @property
    def wants_gpu(self) -> bool:
        return self.gpu > 0

    def run_overrides(self) -> dict[str, Any]:
        overrides = dict(self.overrides)
        if self.epochs is not None:
            overrides["estimator.params.epochs"] = self.epochs
        return overrides


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file."""

    name: str
    path: Path
    base_config_path: Path
    base_config: dict[str, Any]
    search_space: dict[str, Any]
    stages: tuple[StageSpec, ...]
    seed: int = 42
    hang_timeout_s: float = 600.0
    search: str = "random"  # "random" or "optuna"
    repeats: int = 1  # runs per configuration (seeds seed + r, r = 0..repeats-1)
    rank_window: int = 3  # epochs averaged by the ranking rule (psann.contract.smoothed_loss)
    top_k: int = 3  # trials per stage evaluated on the test split after the stage
    profile: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def trial_count(self, stage: StageSpec) -> int:
        """Trials the stage runs: samples x grid combinations x repeats."""
        return stage.num_samples * grid_size(self.search_space) * self.repeats

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise SweepError("stages", f"no stage named {name!r}; stages: {', '.join(s.name for s in self.stages)}")


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _apply_profile(raw: dict[str, Any], profile: str | None) -> dict[str, Any]:
    profiles = _mapping(raw.get("profiles"), "profiles")
    if profile is None:
        return raw
    if profile not in profiles:
        raise SweepError("profiles", f"no profile named {profile!r}; profiles: {', '.join(profiles) or '(none)'}")
    spec = _mapping(profiles[profile], f"profiles.{profile}")
    result = copy.deepcopy(raw)
    stage_updates = _mapping(spec.pop("stages", None), f"profiles.{profile}.stages")
    for key in spec:
        if key not in _TOP_KEYS or key == "profiles":
            raise _unknown(key, tuple(k for k in _TOP_KEYS if k != "profiles") + ("stages",), f"profiles.{profile}")
    result.update(copy.deepcopy(spec))
    stages = result.get("stages")
    if not stage_updates:
        return result
    if not isinstance(stages, list) or not stages:
        raise SweepError("stages", "expected a non-empty list of stages")
    for index, stage in enumerate(stages):  # the stages a profile updates must be well formed first
        if not isinstance(stage, Mapping):
            raise SweepError.expected(f"stages[{index}]", "a mapping of stage settings", stage)
        _check_stage_name(stage.get("name"), f"stages[{index}].name")
    names = [s.get("name") for s in stages]
    for stage_name, update in stage_updates.items():
        if stage_name not in names:
            shown = stage_name if isinstance(stage_name, str) and len(stage_name) <= 80 else short_repr(stage_name)
            raise SweepError(f"profiles.{profile}.stages.{shown}", f"no such stage; stages: {', '.join(map(str, names))}")
        index = names.index(stage_name)
        stages[index] = _deep_merge(dict(stages[index]), _mapping(update, f"profiles.{profile}.stages.{stage_name}"))
    result["stages"] = stages
    return result


def default_grace_period(max_t: int, rank_window: int = RANK_WINDOW) -> int:
    """ASHA's default grace period: max_t / 5, at least one ranking window, at most max_t.

    The trade-off measured by bench/sweep_overhead.py (docs/benchmarks.md): early rungs prune the
    slow learners that win in the end; max_t / 5 with reduction factor 2 kept the full sweep's
    winner or its third on two seeds for about half the epochs.
    """
    return min(max_t, max(rank_window, round(max_t / 5)))


def _parse_scheduler(value: Any, key: str, epochs: int | None) -> SchedulerSpec:
    if value is None or value == "none":
        return SchedulerSpec()
    if value == "asha":
        value = {"type": "asha"}
    section = _mapping(value, key)
    for k in section:
        if k not in _SCHEDULER_KEYS:
            raise _unknown(k, _SCHEDULER_KEYS, key)
    kind = section.get("type", "asha")
    if kind not in ("asha", "none"):
        raise SweepError.expected(f"{key}.type", "asha or none", kind)
    if kind == "none":
        return SchedulerSpec()
    max_t = section.get("max_t", epochs)
    if max_t is None:
        raise SweepError(f"{key}.max_t", "required when the stage sets no epochs")
    max_t = _int(max_t, f"{key}.max_t", 1)
    spec = SchedulerSpec(
        kind="asha",
        max_t=max_t,
        grace_period=_int(section.get("grace_period", default_grace_period(max_t)), f"{key}.grace_period", 1),
        reduction_factor=_int(section.get("reduction_factor", 2), f"{key}.reduction_factor", 2),
    )
    if spec.grace_period > spec.max_t:
        raise SweepError(f"{key}.grace_period", f"{spec.grace_period} is larger than max_t ({spec.max_t})")
    _check_max_t(spec, epochs, key)
    return spec


def _check_max_t(spec: SchedulerSpec, epochs: Any, key: str) -> None:
    # ASHA stops every trial that reaches max_t; a run planned for more epochs would then never
    # evaluate or write its final files, and every trial would end PRUNED.
    if spec.kind == "asha" and isinstance(epochs, int) and not isinstance(epochs, bool) and spec.max_t < epochs:
        raise SweepError(
            f"{key}.max_t",
            f"{spec.max_t} is less than the {epochs} epochs each trial runs; ASHA would stop every trial "
            "before its final evaluation. Set max_t to the epochs, or lower the stage's epochs",
        )


def _parse_report(value: Any, key: str, default: ReportSpec) -> ReportSpec:
    if value is None:
        return default
    section = _mapping(value, key)
    for k in section:
        if k not in _REPORT_KEYS:
            raise _unknown(k, _REPORT_KEYS, key)
    every_epochs = _int(section.get("every_epochs", default.every_epochs), f"{key}.every_epochs", 1)
    seconds = section.get("every_seconds", default.every_seconds)
    if seconds is not None:
        seconds = _number(seconds, f"{key}.every_seconds", 1.0)
    return ReportSpec(every_epochs=every_epochs, every_seconds=seconds)


def _check_stage_name(name: Any, key: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise SweepError.expected(key, "a name made of letters, digits and _", name)
    try:  # a stage is a folder of the sweep: the one folder-name rule (length included)
        check_folder_name(name, key)
    except ValidationError as exc:
        raise SweepError(exc.key, exc.reason) from None
    return name


def _parse_stage(value: Any, index: int, report: ReportSpec = ReportSpec()) -> StageSpec:
    key = f"stages[{index}]"
    section = _mapping(value, key)
    for k in section:
        if k not in _STAGE_KEYS:
            raise _unknown(k, _STAGE_KEYS, key)
    name = _check_stage_name(section.get("name"), f"{key}.name")
    key = f"stages.{name}"
    resources = _mapping(section.get("resources"), f"{key}.resources")
    for k in resources:
        if k not in ("cpu", "gpu"):
            raise _unknown(k, ("cpu", "gpu"), f"{key}.resources")
    cpu = _number(resources.get("cpu", 1), f"{key}.resources.cpu", 0.0)
    gpu = _number(resources.get("gpu", 0), f"{key}.resources.gpu", 0.0)
    if cpu == 0 and gpu == 0:
        # Such trials would never wait for the cluster: Tune would start them all at once.
        raise SweepError(f"{key}.resources", "a trial needs cpu > 0 or gpu > 0, got {cpu: 0, gpu: 0}")
    epochs = section.get("epochs")
    if epochs is not None:
        epochs = _int(epochs, f"{key}.epochs", 1)
    pass_rule = _mapping(section.get("pass_rule"), f"{key}.pass_rule")
    for k in pass_rule:
        if k != "min_success_fraction":
            raise _unknown(k, ("min_success_fraction",), f"{key}.pass_rule")
    overrides = _mapping(section.get("overrides"), f"{key}.overrides")
    for path in overrides:
        _check_key_path(path, f"{key}.overrides")
    max_concurrent = section.get("max_concurrent_trials")
    allow_cpu = section.get("allow_cpu", False)
    if not isinstance(allow_cpu, bool):
        raise SweepError.expected(f"{key}.allow_cpu", "true or false", allow_cpu)
    return StageSpec(
        name=name,
        cpu=cpu,
        gpu=gpu,
        num_samples=_int(section.get("num_samples", 1), f"{key}.num_samples", 1),
        epochs=epochs,
        scheduler=_parse_scheduler(section.get("scheduler"), f"{key}.scheduler", epochs),
        max_concurrent_trials=None if max_concurrent is None else _int(max_concurrent, f"{key}.max_concurrent_trials", 1),
        min_success_fraction=_number(pass_rule.get("min_success_fraction", 1.0), f"{key}.pass_rule.min_success_fraction", 0.0, 1.0),
        overrides=overrides,
        max_failures=_int(section.get("max_failures", 1), f"{key}.max_failures", 0),
        allow_cpu=allow_cpu,
        report=_parse_report(section.get("report"), f"{key}.report", report),
        epoch_seconds=parse_epoch_seconds(section.get("epoch_seconds"), f"{key}.epoch_seconds", SweepError),
        budget=parse_budget(section.get("budget"), f"{key}.budget", gpus_per_trial=gpu, error=SweepError),
    )


_MAX_KEY_PATH = 200  # a run-config key path is a few dotted names; an error line must stay one short line


def _check_key_path(path: Any, prefix: str) -> None:
    """A search-space or override key must be a dotted run-config path short enough to name in errors."""
    if not isinstance(path, str) or not path or len(path) > _MAX_KEY_PATH:
        raise SweepError(prefix, f"expected dotted run-config key paths (estimator.params.lr) of at most "
                                 f"{_MAX_KEY_PATH} characters, got {short_repr(path)}")


def _check_search_space(space: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for path, value in space.items():
        _check_key_path(path, "search_space")
        key = f"search_space.{path}"
        if isinstance(value, Mapping):
            if len(value) != 1 or next(iter(value)) not in SEARCH_KINDS:
                raise SweepError.expected(key, f"one of {{{', '.join(k + ': ...' for k in SEARCH_KINDS)}}} or a constant", dict(value))
            kind, arg = next(iter(value.items()))
            if kind in ("choice", "grid"):
                if not isinstance(arg, list) or not arg:
                    raise SweepError.expected(f"{key}.{kind}", "a non-empty list of values", arg)
            else:
                if not isinstance(arg, list) or len(arg) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in arg
                ):
                    raise SweepError.expected(f"{key}.{kind}", "[low, high]", arg)
                low, high = arg
                if not low < high:
                    raise SweepError(f"{key}.{kind}", f"expected low < high, got [{low}, {high}]")
                if kind == "loguniform" and low <= 0:
                    raise SweepError(f"{key}.{kind}", f"expected low > 0 for a log scale, got {low}")
                if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
                    raise SweepError(f"{key}.{kind}", f"expected integer bounds, got [{low}, {high}]")
        checked[str(path)] = copy.deepcopy(value)
    return checked


def parse_sweep(raw: Mapping[str, Any], *, path: Path, profile: str | None = None) -> SweepSpec:
    """Validate a raw sweep dict (after applying a profile); raises SweepError naming the key."""
    if not isinstance(raw, Mapping):
        raise SweepError.expected(str(path), "a mapping of sweep settings", raw)
    for key in raw:
        if key not in _TOP_KEYS:
            raise _unknown(key, _TOP_KEYS, "")
    data = _apply_profile(dict(raw), profile)
    name = data.get("name", path.stem)
    try:  # the sweep folder is <name>-<timestamp>: one path component, room for the stamp
        check_folder_name(name, "name", reserve=len("-20260101T000000Z"))
    except ValidationError as exc:
        raise SweepError(exc.key, exc.reason) from None
    base = data.get("base_config")
    if not isinstance(base, str):
        raise SweepError.expected("base_config", "a path to a run config (relative to the sweep file)", base)
    try:
        base_path = (path.parent / base).resolve()
        found = base_path.is_file()
    except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte
        raise SweepError.expected("base_config", "a path to a run config", base) from exc
    if not found:
        raise SweepError("base_config", f"file not found: {_short(str(base_path), 200)}")
    try:
        base_config = load_config_file(base_path)
    except ConfigError as exc:  # keyed by the file: the reason says what is wrong with it
        raise SweepError("base_config", f"cannot read {base_path}: {exc.reason}") from exc
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise SweepError("stages", "expected a non-empty list of stages")
    report = _parse_report(data.get("report"), "report", ReportSpec())
    stages = tuple(_parse_stage(s, i, report) for i, s in enumerate(stages_raw))
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise SweepError("stages", f"stage names must be unique, got {names}")
    estimator = base_config.get("estimator")
    params = estimator.get("params") if isinstance(estimator, Mapping) else None
    base_epochs = params.get("epochs") if isinstance(params, Mapping) else None
    for stage in stages:
        if stage.epochs is None:  # the run's epochs come from an override or the base config
            planned = stage.overrides.get("estimator.params.epochs", base_epochs)
            _check_max_t(stage.scheduler, planned, f"stages.{stage.name}.scheduler")
    hang = _number(data.get("hang_timeout_s", 600), "hang_timeout_s", 1.0)
    search = data.get("search", "random")
    if search not in SEARCH_ALGORITHMS:
        raise SweepError.expected("search", " or ".join(SEARCH_ALGORITHMS), search)
    search_space = _check_search_space(_mapping(data.get("search_space"), "search_space"))
    if search == "optuna":
        grids = [path for path, v in search_space.items() if isinstance(v, Mapping) and "grid" in v]
        if grids:
            raise SweepError(f"search_space.{grids[0]}", "grid is not supported with search: optuna "
                             "(TPE samples every parameter); use choice, or search: random")
    repeats = _int(data.get("repeats", 1), "repeats", 1)
    return SweepSpec(
        name=name,
        path=path.resolve(),
        base_config_path=base_path,
        base_config=base_config,
        search_space=search_space,
        stages=stages,
        seed=check_seed(data.get("seed", 42), error=SweepError),
        hang_timeout_s=hang,
        search=search,
        repeats=repeats,
        rank_window=_int(data.get("rank_window", 3), "rank_window", 1),
        top_k=_int(data.get("top_k", 3), "top_k", 0),
        profile=profile,
        raw=dict(raw),
    )


def _read(path: str | Path) -> Any:
    """The sweep file, read strictly (psann.configfile: duplicate keys, non-UTF-8, NaN...)."""
    try:
        return read_config(path, what="sweep")
    except ValidationError as exc:
        raise SweepError(exc.key, exc.reason) from None


def load_sweep(path: str | Path, *, profile: str | None = None) -> SweepSpec:
    """Read and validate a sweep file."""
    path = Path(path)
    return parse_sweep(_read(path), path=path, profile=profile)


def available_profiles(path: str | Path) -> list[str]:
    raw = _read(path) or {}
    if not isinstance(raw, Mapping):
        return []
    return list(_mapping(raw.get("profiles"), "profiles"))


def _representative_values(spec: Any) -> list[Any]:
    if not isinstance(spec, Mapping):
        return [spec]
    kind, arg = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        return list(arg)
    if kind == "randint":
        return [arg[0], arg[1] - 1]
    # uniform and loguniform sample floats even between integer bounds (tune.uniform(8, 64) gives
    # 23.7), so the values checked are floats too.
    return [float(arg[0]), float(arg[1])]


def _stage_config_error(stage: StageSpec, exc: ConfigError) -> SweepError:
    """A run-config error of a stage's trials, keyed by the sweep-file entry that caused it: the
    stage's override of that key (or of a key inside it), else the base config's key."""
    for path in stage.run_overrides():
        if exc.key == path or exc.key.startswith(path + "."):
            where = f"overrides.{exc.key}"
        elif path.startswith(exc.key + "."):  # the override path itself is wrong (``hiso.window``)
            where = f"overrides.{path}"
        else:
            continue
        if path == "estimator.params.epochs" and stage.epochs is not None:
            where = "epochs"  # set by the stage's own epochs key, which wins over its overrides
        return SweepError(f"stages.{stage.name}.{where}", f"makes an invalid run config: {exc.reason}")
    return SweepError(f"base_config.{exc.key}", f"{exc.reason} (in the run config of stage {stage.name!r})")


def validate_trial_configs(spec: SweepSpec) -> int:
    """Validate the run config every stage's trials will get: each search-space value and bound
    is applied to the base config with the stage's overrides and parsed by the run-config schema.

    Returns the number of configs checked; raises SweepError naming the sweep-file key to change
    (``stages.smoke.overrides.hisso.window``, ``search_space.hisso.window``,
    ``base_config.hisso.window``); the run-config error is its ``__cause__``.
    """
    checked = 0
    base_dir, source = spec.base_config_path.parent, str(spec.base_config_path)
    loaded: set[str] = set()  # datasets already loaded and checked against a config like this one
    for stage in spec.stages:
        # The stage's own overrides first, so a bad override is blamed on the stage, not on
        # whichever search-space key happens to be tried first.
        try:
            config = parse_run_config(apply_overrides(spec.base_config, stage.run_overrides()), base_dir=base_dir, source=source)
            _check_dataset(config, loaded)
        except ConfigError as exc:
            raise _stage_config_error(stage, exc) from exc
        if not spec.search_space:
            checked += 1
        for path, entry in spec.search_space.items():
            for value in _representative_values(entry):
                overrides = {**stage.run_overrides(), path: value}
                try:
                    config = parse_run_config(apply_overrides(spec.base_config, overrides), base_dir=base_dir, source=source)
                    _check_dataset(config, loaded)
                except ConfigError as exc:
                    raise SweepError(
                        f"search_space.{path}",
                        f"{short_repr(value)} makes an invalid run config for stage {stage.name!r}: {exc.key}: "
                        f"{_short(exc.reason)}",
                    ) from exc
                checked += 1
    return checked


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_dataset(config: Any, loaded: set[str]) -> None:
    """Load the trial config's dataset and check it against the config, as the run CLI does
    before any work: a bad loader argument, a broken npz or a window longer than the data is
    bad input now, not an error in every trial. Each distinct data section (with the settings
    checked against the data) is loaded once."""
    from psann.runs import load_dataset

    resolved = config.resolved
    params = resolved["estimator"]["params"]
    relevant = {
        "data": resolved["data"], "hisso": resolved["hisso"], "evaluation": resolved["evaluation"],
        "conditioning": [params.get("context_dim"), params.get("conditioning_builder")],
    }
    fingerprint = json.dumps(relevant, sort_keys=True, default=str)
    if fingerprint in loaded:
        return
    try:
        load_dataset(config)
    except ConfigError as exc:
        cause = exc.__cause__
        kwargs = config.data.get("kwargs") or {}
        if exc.key == "data.loader" and isinstance(cause, ValidationError) and cause.key in kwargs:
            # A built-in loader's argument error is keyed by the argument: place it in the config.
            raise ConfigError(f"data.kwargs.{cause.key}", cause.reason) from exc
        raise
    except Exception:  # noqa: BLE001 - a loader that crashes is a failed trial (exit 1), as in the run CLI
        pass
    loaded.add(fingerprint)


def grid_size(search_space: Mapping[str, Any]) -> int:
    """Number of grid combinations (1 when there is no grid)."""
    sizes = [len(v["grid"]) for v in search_space.values() if isinstance(v, Mapping) and "grid" in v]
    return int(__import__("math").prod(sizes)) if sizes else 1


def to_param_space(search_space: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the YAML search space into ray.tune search objects (keys stay dotted paths)."""
    from ray import tune

    makers = {
        "choice": lambda arg: tune.choice(list(arg)),
        "grid": lambda arg: tune.grid_search(list(arg)),
        "uniform": lambda arg: tune.uniform(arg[0], arg[1]),
        "loguniform": lambda arg: tune.loguniform(arg[0], arg[1]),
        "randint": lambda arg: tune.randint(arg[0], arg[1]),
    }
    space: dict[str, Any] = {}
    for path, value in search_space.items():
        if isinstance(value, Mapping):
            kind, arg = next(iter(value.items()))
            space[path] = makers[kind](arg)
        else:
            space[path] = value
    return space


def describe_plan(spec: SweepSpec) -> list[str]:
    """Human-readable plan lines: stages, trials, resources, schedulers."""
    lines = [f"sweep {spec.name!r} from {spec.path}" + (f" (profile {spec.profile})" if spec.profile else "")]
    lines.append(f"base config: {spec.base_config_path}")
    repeats = f", {spec.repeats} runs per configuration (seeds {spec.seed}..{spec.seed + spec.repeats - 1})" if spec.repeats > 1 else ""
    lines.append(f"search: {spec.search} (seed {spec.seed}){repeats}; ranking: mean val_loss of the last "
                 f"{spec.rank_window} epochs; top {spec.top_k} per stage evaluated on test")
    for stage in spec.stages:
        trials = spec.trial_count(stage)
        sched = (
            f"ASHA(max_t={stage.scheduler.max_t}, grace={stage.scheduler.grace_period}, rf={stage.scheduler.reduction_factor})"
            if stage.scheduler.kind == "asha"
            else "none"
        )
        gpu_note = " (may run on CPU: allow_cpu)" if stage.wants_gpu and stage.allow_cpu else ""
        lines.append(
            f"stage {stage.name}: {trials} trials x {{cpu: {stage.cpu:g}, gpu: {stage.gpu:g}}}{gpu_note}, "
            f"epochs={stage.epochs or 'config'}, scheduler={sched}, max_concurrent={stage.max_concurrent_trials or 'auto'}, "
            f"report every {stage.report.every_epochs} epochs"
            + (f" or {stage.report.every_seconds:g} s" if stage.report.every_seconds is not None else "") + ", "
            f"pass if >= {stage.min_success_fraction:.0%} succeed; peak ask {{cpu: {stage.cpu * min(trials, stage.max_concurrent_trials or trials):g}, "
            f"gpu: {stage.gpu * min(trials, stage.max_concurrent_trials or trials):g}}}"
        )
    for path, value in spec.search_space.items():
        lines.append(f"  search {path}: {value}")
    return lines
