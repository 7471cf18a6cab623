"""Run-config schema: loading, defaults, validation with key paths, and dotted-path overrides.

A run config has five sections (DESIGN.md section 4)::

    estimator:  {target: psann.WaveResNetRegressor, params: {...}}
    hisso:      {enabled, window, batch_episodes, ..., supervised: {y_key, epochs, batch_size}}
    data:       {npz: path relative to the config file}  or  {loader: dotted.path, kwargs: {...}}
    training:   {verbose, keep_checkpoints}
    evaluation: {portfolio_prices_key: prices_test, trans_cost}

Every error is a ``ConfigError`` (a :class:`psann.errors.ValidationError`): ``err.key`` is the key
path and the message is ``<key>: <reason>``, e.g. ``hisso.window: expected an int >= 2, got 'abc'``.
Errors from the HISSO options and the estimator's own parameter check arrive as ValidationErrors
too and are re-keyed by their ``.key``, never by reading their text.
"""

from __future__ import annotations

import copy
import datetime
import inspect
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


from psann._imports import import_callable, import_object
from psann.configfile import read_config
from psann.data import COUNT_LIMIT, DATASET_KEYS
from psann.errors import ValidationError, did_you_mean, short_repr, unknown_key
from psann.estimators import ESTIMATORS, BasePSANNEstimator
from psann.hisso.options import HISSOOptions
from psann.hisso.rewards import resolve_reward

__all__ = [
    "ConfigError",
    "RunConfig",
    "SECTIONS",
    "apply_overrides",
    "load_config_file",
    "parse_run_config",
    "resolve_estimator_class",
]

SECTIONS = ("estimator", "hisso", "data", "training", "evaluation")
_SECTION_KEYS = {
    "estimator": ("target", "params"),
    "data": ("npz", "loader", "kwargs"),
    "training": ("verbose", "keep_checkpoints"),
    "evaluation": ("portfolio_prices_key", "trans_cost", "split"),
}


class ConfigError(ValidationError):
    """A run config problem: ``ConfigError(key, reason)``; ``err.key`` is the key path
    (``hisso.window``), or the file path for a file that cannot be read as a config."""


# Keys of configs written for the earlier psann CLI whose meaning here is unclear or different:
# refused with the reason and what to write instead (docs/hisso_cli.md, "Coming from the earlier
# psann CLI"). Keys whose meaning is clear are accepted (hidden_layers as WaveResNet's depth,
# trans_cost, reward {target, kwargs}, ...).
EARLIER_CLI_KEYS = {
    "episodic": "is the earlier psann CLI's name of the HISSO section; rename it to 'hisso'",
    "estimator.params.architecture": (
        "was the earlier PSANNRegressor's switch between model families; name the class in "
        "estimator.target instead (psann.WaveResNetRegressor, psann.ResConvPSANNRegressor, ...)"
    ),
    "hisso.episodes_per_batch": (
        "was recorded by the earlier CLI for its own batching, which differs from ours; set "
        "hisso.batch_episodes (episodes per update) and hisso.updates_per_epoch"
    ),
}


_MAX_REASON_CHARS = 300  # an error is one line: a reason from a layer below is cut to this
_MAX_LISTED = 12  # allowed keys listed in an unknown-key error (estimator.params has ~45)


def _short(text: Any, limit: int = _MAX_REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown(key: Any, allowed: tuple[str, ...] | list[str], prefix: str) -> ConfigError:
    if not isinstance(key, str) or len(key) > 80:  # a key too long to print, or not a string
        key = short_repr(key)
    path = f"{prefix}.{key}" if prefix else str(key)
    if path in EARLIER_CLI_KEYS:
        return ConfigError(path, f"not supported: it {EARLIER_CLI_KEYS[path]}")
    allowed = list(allowed)
    if len(allowed) <= _MAX_LISTED:
        return unknown_key(key, allowed, prefix, error=ConfigError)  # type: ignore[return-value]
    hint = did_you_mean(key, allowed)
    suggestion = f" (did you mean {hint!r}?)" if hint else ""
    return ConfigError(path, f"unknown key{suggestion}; allowed: {', '.join(sorted(allowed)[:_MAX_LISTED])}, ... "
                             f"({len(allowed)} keys, listed in docs/hisso_cli.md)")


def _rekeyed(exc: ValidationError, prefix: str = "") -> ConfigError:
    """A ValidationError from a layer below (HISSO options, an estimator) as a ConfigError, its key
    placed under ``prefix``."""
    moved = exc.under(prefix) if prefix else exc
    return ConfigError(moved.key, _short(moved.reason))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON run config (strictly, psann.configfile.read_config) into a dict."""
    path = Path(path)
    try:  # strict: duplicate keys, non-UTF-8, directories, NaN/inf, python tags (psann.configfile)
        data = read_config(path)
    except ValidationError as exc:
        raise ConfigError(exc.key, exc.reason) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}")
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a raw config with dotted-path overrides set (``estimator.params.lr: 0.01``)."""
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        if parts[0] not in SECTIONS:
            raise _unknown(parts[0], SECTIONS, "")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts[: i + 1]), f"cannot set {short_repr(dotted)}: this key is not a mapping")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def resolve_estimator_class(target: Any) -> type[BasePSANNEstimator]:
    """Map ``estimator.target`` (``psann.WaveResNetRegressor``, a class name, or a dotted path)."""
    allowed = ", ".join(f"psann.{name}" for name in sorted(ESTIMATORS))
    if not isinstance(target, str) or not target:
        raise ConfigError.expected("estimator.target", f"one of {allowed} or a dotted path", target)
    name = target.rsplit(".", 1)[-1]
    if name in ESTIMATORS and target in (name, f"psann.{name}", f"psann.estimators.{name}"):
        return ESTIMATORS[name]
    try:
        cls = import_object(target)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, BasePSANNEstimator)):
        hint = did_you_mean(name, sorted(ESTIMATORS))
        suggestion = f" (did you mean 'psann.{hint}'?)" if hint else ""
        raise ConfigError(
            "estimator.target",
            f"expected one of {allowed} or an importable dotted path to a psann estimator, got {short_repr(target)}"
            f"{suggestion}",
        )
    return cls


@dataclass(frozen=True)
class RunConfig:
    """A validated run config; ``resolved`` is the dict written to config_resolved.yaml."""

    estimator_cls: type[BasePSANNEstimator]
    estimator_params: dict[str, Any]
    hisso: HISSOOptions | None  # None when hisso.enabled is false or the section is absent
    data: dict[str, Any]  # {"npz": Path} or {"loader": str, "kwargs": dict}
    verbose: int
    keep_checkpoints: bool
    portfolio_prices_key: str | None
    trans_cost: float
    eval_split: str
    resolved: dict[str, Any] = field(repr=False)
    source: str | None = None  # the config file, when there is one
    notes: tuple[str, ...] = ()  # deprecations in the config: the run logs them as warning events


def _mapping(raw: Any, key: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError.expected(key, "a mapping", raw)
    return dict(raw)


def _check_keys(section: dict[str, Any], name: str) -> None:
    allowed = _SECTION_KEYS[name]
    for key in section:
        if key not in allowed:
            raise _unknown(key, allowed, name)


def _parse_estimator(raw: Any, notes: list[str]) -> tuple[type[BasePSANNEstimator], dict[str, Any]]:
    if raw is None:
        raise ConfigError("estimator", "missing required section (estimator: {target: ..., params: {...}})")
    section = _mapping(raw, "estimator")
    _check_keys(section, "estimator")
    if "target" not in section:
        raise ConfigError("estimator.target", "missing required key")
    cls = resolve_estimator_class(section["target"])
    params = _mapping(section.get("params"), "estimator.params")
    known = cls._get_param_names()  # deprecated aliases are parameters too (sklearn's pattern)
    for key in params:
        if key not in known:
            raise _unknown(key, known, "estimator.params")
    try:
        estimator = cls(**params)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            estimator.validate_params()
        resolved = estimator.canonical_params()
        for warning in caught:
            # A deprecated name (hidden_layers for WaveResNet's depth) still runs; say so at the
            # config's key (and in the run's log and events). config_resolved.yaml records the new name.
            notes.append(f"estimator.params: {warning.message}")
            warnings.warn(notes[-1], DeprecationWarning, stacklevel=3)
    except ValidationError as exc:  # keyed by the parameter name (hidden_units)
        # A value given under a deprecated name (hidden_layers for depth) is checked as its new
        # name; the error names the key the config actually has.
        aliases = {canonical: alias for alias, canonical in getattr(cls, "_deprecated_params", {}).items()}
        alias = aliases.get(exc.key)
        if alias is not None and alias in params:  # the alias's value is the one checked
            exc = type(exc)(alias, exc.reason)
        raise _rekeyed(exc, "estimator.params") from exc
    except (TypeError, ValueError) as exc:  # an estimator that raises without a key: none is guessed
        raise ConfigError("estimator.params", _short(exc)) from exc
    return cls, resolved


def _parse_data(raw: Any, base_dir: Path) -> dict[str, Any]:
    if raw is None:
        raise ConfigError("data", "missing required section ({npz: file.npz} or {loader: dotted.path, kwargs: {...}})")
    section = _mapping(raw, "data")
    _check_keys(section, "data")
    has_npz, has_loader = "npz" in section, "loader" in section
    if has_npz == has_loader:
        raise ConfigError("data", "expected exactly one of 'npz' or 'loader'")
    if has_npz:
        if "kwargs" in section:
            raise ConfigError("data.kwargs", "only allowed with data.loader")
        npz = section["npz"]
        if not isinstance(npz, str) or not npz:
            raise ConfigError.expected("data.npz", "a file path", npz)
        path = Path(npz) if os.path.isabs(npz) else (base_dir / npz)
        try:
            found = path.is_file()
            resolved = path.resolve()
        except (OSError, ValueError) as exc:  # a name too long for the filesystem, a NUL byte
            raise ConfigError.expected("data.npz", "a file path", npz) from exc
        if not found:
            raise ConfigError("data.npz", f"file not found: {_short(path, 200)}")
        return {"npz": resolved}
    loader = section["loader"]
    kwargs = _iso_dates(_mapping(section.get("kwargs"), "data.kwargs"))
    try:
        function = import_callable(loader, "data.loader")
    except ValidationError as exc:
        raise _rekeyed(exc) from exc
    _check_loader_arguments(function, kwargs)
    if "path" in kwargs:
        # A loader's file (price_table_dataset's CSV) is relative to the config file, like data.npz,
        # and made absolute here: sweep trials run in other folders, and config_resolved.yaml is
        # read back from anywhere.
        kwargs["path"] = str(_existing_file("data.kwargs.path", kwargs["path"], base_dir))
    return {"loader": loader, "kwargs": kwargs}


def _check_loader_arguments(function: Any, kwargs: dict[str, Any]) -> None:
    """An argument the loader does not take is refused now, at its key (``data.kwargs.stepz``), not
    as a TypeError when the dataset is loaded."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in names:
            raise _unknown(key, names, "data.kwargs")
    missing = [
        p.name for p in parameters
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_POSITIONAL and p.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"data.kwargs.{missing[0]}", "missing required argument of the loader")


def _iso_dates(value: Any) -> Any:
    """``value`` with every date and datetime as its ISO 8601 string. YAML reads an unquoted
    ``2023-04-03`` as a date; the resolved config must stay plain JSON data (sweeps copy it through
    json), and loaders read ISO strings."""
    if isinstance(value, datetime.date):  # datetime.datetime too
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _iso_dates(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_iso_dates(item) for item in value]
    return value


def _existing_file(key: str, value: Any, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError.expected(key, "a file path", value)
    try:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        found = path.exists()
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # too long a name, a NUL byte, an unknown ~user
        raise ConfigError.expected(key, "a file path", value) from exc
    if not found:
        raise ConfigError(key, f"file not found: {_short(path, 200)}")
    return resolved


def _parse_hisso(raw: Any) -> tuple[HISSOOptions | None, dict[str, Any] | None]:
    if raw is None:
        return None, None
    section = _mapping(raw, "hisso")
    for key in section:
        if f"hisso.{key}" in EARLIER_CLI_KEYS:
            raise _unknown(key, (), "hisso")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError.expected("hisso.enabled", "true or false", enabled)
    try:
        options = HISSOOptions.from_mapping(section)
    except ValidationError as exc:  # its keys are already run-config paths (hisso.window)
        raise _rekeyed(exc) from exc
    if options.supervised is not None and options.supervised.y is not None:
        raise ConfigError("hisso.supervised.y", "run configs name targets with hisso.supervised.y_key")
    if options.supervised is not None and options.supervised.y_key not in DATASET_KEYS:
        raise ConfigError.expected("hisso.supervised.y_key", "a dataset key such as y_train", options.supervised.y_key)
    if callable(options.reward) and not isinstance(options.reward, str):
        raise ConfigError("hisso.reward", "expected a registry name or import path string")
    if options.reward is not None:
        # Resolve now, so a misspelt reward is a config error (exit 2), not a failure after training starts.
        try:
            resolve_reward(options.reward)
        except ValidationError as exc:  # keyed hisso.reward, or hisso.reward.target / .kwargs
            key = exc.key if exc.key.startswith("hisso.reward") else "hisso.reward"
            raise ConfigError(_short(key, 120), _short(exc.reason)) from exc
        except (TypeError, ValueError) as exc:  # a registry error without a key
            raise ConfigError("hisso.reward", _short(exc)) from exc
    resolved = {"enabled": enabled}
    for name in HISSOOptions.__dataclass_fields__:
        value = getattr(options, name)
        if name == "supervised":
            value = None if value is None else {
                "y_key": value.y_key, "epochs": value.epochs, "batch_size": value.batch_size, "lr": value.lr
            }
        resolved[name] = value
    if options.reward is None:
        resolved["reward"] = "portfolio"
        options = options.with_updates(reward="portfolio")
    return (options if enabled else None), resolved


def parse_run_config(raw: Mapping[str, Any], *, base_dir: str | os.PathLike = ".", source: str | None = None) -> RunConfig:
    """Validate a raw config dict and fill in defaults; raises ConfigError naming the key path."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config", f"expected a mapping of sections, got {type(raw).__name__}")
    for key in raw:
        if key not in SECTIONS:
            raise _unknown(key, SECTIONS, "")
    notes: list[str] = []
    cls, params = _parse_estimator(raw.get("estimator"), notes)
    hisso, hisso_resolved = _parse_hisso(raw.get("hisso"))
    if hisso is not None and params.get("preserve_shape"):
        raise ConfigError(
            "estimator.params.preserve_shape",
            "HISSO takes one action per sample (one row of X per time step); per-position outputs have "
            "no meaning as allocations. Set it to false: (N, C, L) windows are then flattened "
            "(dense, WaveResNet) or pooled (ResConv)",
        )
    data = _parse_data(raw.get("data"), Path(base_dir))

    training = _mapping(raw.get("training"), "training")
    _check_keys(training, "training")
    verbose = training.get("verbose", 1)
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if not isinstance(verbose, int) or not 0 <= verbose <= COUNT_LIMIT:
        raise ConfigError.expected("training.verbose", "an int >= 0 or a bool", verbose)
    keep = training.get("keep_checkpoints", False)
    if not isinstance(keep, bool):
        raise ConfigError.expected("training.keep_checkpoints", "true or false", keep)

    evaluation = _mapping(raw.get("evaluation"), "evaluation")
    _check_keys(evaluation, "evaluation")
    prices_key = evaluation.get("portfolio_prices_key", "prices_test")
    if prices_key is not None and (not isinstance(prices_key, str) or prices_key not in DATASET_KEYS):
        raise ConfigError.expected("evaluation.portfolio_prices_key", "a dataset key such as prices_test", prices_key)
    default_cost = hisso.transition_penalty if hisso is not None else 0.0
    trans_cost = evaluation.get("trans_cost", default_cost)
    if isinstance(trans_cost, bool) or not isinstance(trans_cost, (int, float)) or not math.isfinite(trans_cost) or trans_cost < 0:
        raise ConfigError.expected("evaluation.trans_cost", "a number >= 0", trans_cost)
    split = evaluation.get("split", prices_key.rsplit("_", 1)[-1] if prices_key else "test")
    if split not in ("train", "val", "test"):
        raise ConfigError.expected("evaluation.split", "one of train, val, test", split)
    if prices_key and not prices_key.endswith(f"_{split}"):
        # Prices of another split would be scored against this split's allocations, row by row.
        raise ConfigError(
            "evaluation.split",
            f"{split!r} does not match evaluation.portfolio_prices_key {prices_key!r}; use prices_{split} or split "
            f"{prices_key.rsplit('_', 1)[-1]!r}",
        )

    resolved = {
        "estimator": {"target": _target_name(cls), "params": dict(params)},
        "hisso": hisso_resolved if hisso_resolved is not None else {"enabled": False},
        "data": {"npz": str(data["npz"])} if "npz" in data else {"loader": data["loader"], "kwargs": data["kwargs"]},
        "training": {"verbose": verbose, "keep_checkpoints": keep},
        "evaluation": {"portfolio_prices_key": prices_key, "trans_cost": float(trans_cost), "split": split},
    }
    resolved["estimator"]["params"]["device"] = str(params["device"])
    return RunConfig(
        estimator_cls=cls,
        estimator_params=params,
        hisso=hisso,
        data=data,
        verbose=verbose,
        keep_checkpoints=keep,
        portfolio_prices_key=prices_key,
        trans_cost=float(trans_cost),
        eval_split=split,
        resolved=resolved,
        source=source,
        notes=tuple(notes),
    )


def _target_name(cls: type) -> str:
    """The shortest import path of an estimator class (``psann.X`` for the built-in ones)."""
    if ESTIMATORS.get(cls.__name__) is cls:
        return f"psann.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"
