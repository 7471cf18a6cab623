"""Estimator files: weights as a state_dict plus a JSON metadata block with a format version.

    <path>/weights.pt       torch.save(state_dict); loaded with weights_only=True (no pickle code)
    <path>/metadata.json    class, params, fitted shapes, scaler, network depth, HISSO facts

Rewards are recorded by registry name or import path, never pickled. The optional parts are
rebuilt from JSON: an LSM expander from its spec (``params.expander``) and its input width
(``fitted.expander_in``), its masks and weights then loaded from weights.pt like any buffer; a
token embedder from its config (``params.embedder``). A custom nn.Module expander cannot be saved.

Saving writes a staging folder and renames it into place; the folder and its files get the mode a
plain create would have had (0777 / 0666 less the umask), so whoever shares the storage can read
them. ``overwrite=True`` replaces only a folder that holds a saved estimator.

Loading reads metadata.json as untrusted input: every field the loader uses is checked first (a
ValidationError keyed by its place, ``metadata.json: fitted.dim_in``); then the network it describes
is built on the meta device (shapes without memory) and compared, tensor by tensor, with
weights.pt; only then is the real network built. The checks live in _saved_metadata.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from sklearn.utils.validation import check_is_fitted

from psann import __version__
from psann.activations import SineConfig
from psann.errors import ValidationError, short_repr, unknown_key
from psann.estimators._params import Int, NoneOr, Real
from psann.estimators._saved_metadata import (
    FORMAT_VERSION,
    METADATA,
    WEIGHTS,
    _bad,
    _check_sizes,
    _check_weights,
    _dry_run,
    _read_metadata,
    _sample_rows,
    _under_params,
)
from psann.lsm import build_expander
from psann.runlog import shared_mode

__all__ = ["FORMAT_VERSION", "save_estimator", "load_estimator"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot record parameter value {value!r} of type {type(value).__name__} in metadata.json")


def save_estimator(estimator: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the estimator atomically into directory ``path``."""
    check_is_fitted(estimator)
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        _check_replaceable(target)
    net = estimator.model_.net
    metadata = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": type(estimator).__name__,
        "params": _jsonable(estimator._saved_params()),
        "fitted": {
            "input_shape": list(estimator.input_shape_),
            "n_features_in": estimator.n_features_in_,
            "dim_in": int(net.dim_in),
            "dim_out": int(net.dim_out),
            "y_was_1d": bool(getattr(estimator, "y_was_1d_", False)),
            "output_shape": _jsonable(getattr(estimator, "output_shape_", None)),
            "depth": getattr(net, "depth", None),
            "conditioning_dim": int(estimator.model_.conditioning_dim),
            "expander_in": _expander_in(estimator.model_),
            # w0 is an attribute, not a weight: the warm-up schedule (or a best-epoch restore in
            # the middle of it) can leave it away from the first_layer_w0 parameter.
            "first_layer_w0": getattr(net, "first_layer_w0", None),
            "seed": getattr(estimator, "seed_", None),
            "best_epoch": getattr(estimator, "best_epoch_", None),
        },
        "scaler": {
            "mean": estimator.model_.mean.detach().cpu().tolist(),
            "std": estimator.model_.std.detach().cpu().tolist(),
            "shape": list(estimator.model_.mean.shape),
        },
        "hisso": _jsonable(getattr(estimator, "hisso_", None)),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes a 0700 folder; the saved folder and files get the umask's mode instead.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        state = {k: v.detach().cpu() for k, v in estimator.model_.state_dict().items()}
        torch.save(state, staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        shared_mode(staging / WEIGHTS)
        shared_mode(staging / METADATA)
        shared_mode(staging, directory=True)
        if target.exists() or target.is_symlink():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_replaceable(target: Path) -> None:
    """Refuse to replace anything but a saved estimator (a user's folder or file is never deleted)."""
    meta_path = target / METADATA
    try:
        metadata = json.loads(meta_path.read_text()) if target.is_dir() and meta_path.is_file() else None
    except (OSError, ValueError, RecursionError):
        metadata = None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if not Int(1, FORMAT_VERSION).check(version) or not isinstance(metadata.get("class"), str):
        what = "folder" if target.is_dir() else "file"
        raise FileExistsError(
            f"{target} exists and is not a saved estimator (a {what} without a {METADATA} of format "
            f"1..{FORMAT_VERSION}); overwrite=True replaces only a folder written by save, so nothing was "
            "changed: choose another path or remove it yourself"
        )


def _expander_in(model: Any) -> int | None:
    """The expander's input width (features or channels), or None without an expander."""
    expander = getattr(model, "expander", None)
    if expander is None:
        return None
    return int(getattr(expander, "in_features", getattr(expander, "in_channels", 0)))


# -- loading ----------------------------------------------------------------------------------


def _build_estimator(target_cls: type, metadata: dict[str, Any], device: Any, where: Path) -> Any:
    """The estimator its params describe, every parameter checked (keys under ``params``)."""
    params = dict(metadata["params"])
    allowed = [name for name in inspect.signature(target_cls.__init__).parameters if name != "self"]
    for key in params:
        if key not in allowed:
            err = unknown_key(key, allowed, f"{METADATA}: params")
            raise ValidationError(err.key, f"{err.reason} (in {where})")
    if device is not None:
        params["device"] = str(device) if isinstance(device, torch.device) else device
    estimator = target_cls(**params)
    try:
        estimator.validate_params()
    except ValidationError as exc:
        raise _under_params(exc, where) from None
    # learnable and activation_bounds are free-form parameters: checked here, where the sine
    # configuration would otherwise fail with a bare TypeError.
    learnable = estimator.learnable
    if not (isinstance(learnable, str) or (isinstance(learnable, list) and all(isinstance(v, str) for v in learnable))):
        raise _bad("params.learnable", f"expected 'all', 'none' or a list of names, got {short_repr(learnable)}", where)
    bounds = estimator.activation_bounds
    pair = NoneOr(Real())
    if bounds is not None and not (
        isinstance(bounds, dict)
        and all(isinstance(v, list) and len(v) == 2 and all(pair.check(x) for x in v) for v in bounds.values())
    ):
        reason = f"expected None or {{name: [low, high]}}, got {short_repr(bounds)}"
        raise _bad("params.activation_bounds", reason, where)
    for name, kwargs in (
        ("learnable", {"learnable": learnable if isinstance(learnable, str) else tuple(learnable)}),
        ("activation_bounds", {"bounds": None if bounds is None else {k: tuple(v) for k, v in bounds.items()}}),
    ):
        try:
            SineConfig(**kwargs)
        except ValueError as exc:
            raise _bad(f"params.{name}", str(exc), where) from None
    context_dim = estimator.canonical_params().get("context_dim", 0)
    if metadata["fitted"]["conditioning_dim"] != context_dim:
        raise _bad(
            "fitted.conditioning_dim",
            f"expected {context_dim} (params.context_dim), got {metadata['fitted']['conditioning_dim']}",
            where,
        )
    if estimator.expander is not None and metadata["fitted"]["expander_in"] is None:
        raise _bad("fitted.expander_in", "params.expander is set but fitted.expander_in is missing", where)
    return estimator


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path / WEIGHTS} is corrupt or not a weights file: {exc}") from exc
    tensors = isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not tensors:
        raise ValueError(f"{path / WEIGHTS} is corrupt or not a weights file: expected a state_dict (names -> tensors)")
    return state


def _build_model(estimator: Any, metadata: dict[str, Any], expander: torch.nn.Module | None) -> Any:
    """The model metadata.json describes, initialised but without the saved weights."""
    from psann.estimators._base import _Standardised
    from psann.estimators._shared import build_embedder

    fitted = metadata["fitted"]
    estimator.input_shape_ = tuple(fitted["input_shape"])  # the network's layout depends on it
    net = estimator._build_network(fitted["dim_in"], fitted["dim_out"])
    depth = fitted.get("depth")
    if depth is not None and hasattr(net, "add_blocks") and net.depth < depth:
        net.add_blocks(depth - net.depth)
    if fitted.get("first_layer_w0") is not None and hasattr(net, "set_first_layer_w0"):
        net.set_first_layer_w0(float(fitted["first_layer_w0"]))
    stats_shape = tuple(metadata["scaler"]["shape"])
    return _Standardised(
        net,
        torch.zeros(stats_shape),
        torch.ones(stats_shape),
        conditioning_dim=fitted["conditioning_dim"],
        embedder=build_embedder(estimator),
        expander=expander,
        expander_lr=estimator.lsm_lr,
    )


def _meta_model(estimator: Any, metadata: dict[str, Any], where: Path) -> Any:
    """The model metadata.json describes, built on the meta device: shapes, no memory."""
    try:
        with torch.device("meta"):
            return _build_model(estimator, metadata, None)
    except ValidationError as exc:
        raise _under_params(exc, where) from None
    except (ValueError, TypeError, RuntimeError, OverflowError, KeyError, IndexError) as exc:
        raise _bad("params", f"the network it describes cannot be built: {exc}", where) from None


def load_estimator(cls: type, path: str | os.PathLike, *, device: str | torch.device | None = None) -> Any:
    """Load what save_estimator wrote; metadata.json is checked field by field and against
    weights.pt (ValidationError keyed ``metadata.json: <field>``) before the network is built."""
    from psann.estimators import ESTIMATORS
    from psann.estimators._base import resolve_device

    path = Path(path)
    metadata = _read_metadata(path)
    where = path / METADATA
    class_name = metadata["class"]
    target_cls = ESTIMATORS.get(class_name)
    if target_cls is None:
        raise _bad("class", f"unknown estimator class {class_name!r}; known: {sorted(ESTIMATORS)}", where)
    if cls is not target_cls and not issubclass(target_cls, cls):
        raise TypeError(f"{path} holds a {class_name}, not a {cls.__name__}; load it with {class_name}.load")
    state = _load_state(path)
    _check_sizes(metadata, state, where)  # before any parameter check: an embedder's check builds it
    estimator = _build_estimator(target_cls, metadata, device, where)
    try:
        resolved = resolve_device(estimator.device)
    except ValidationError as exc:
        raise _bad("params.device", f"{exc.reason}; or pass device= to load", where) from None
    rows = _sample_rows(estimator, metadata, where)
    model = _meta_model(estimator, metadata, where)
    _check_weights(model, estimator, state, metadata, where)
    _dry_run(model, rows, estimator, metadata, where)

    fitted = metadata["fitted"]
    expander = None
    if estimator.expander is not None:
        expander = build_expander(estimator.expander, fitted["expander_in"])
    model = _build_model(estimator, metadata, expander).to(resolved)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path / WEIGHTS} does not match its metadata: {exc}") from exc
    model.eval()
    estimator.model_ = model
    estimator.device_ = resolved
    estimator.n_features_in_ = fitted["n_features_in"]
    estimator.y_was_1d_ = fitted["y_was_1d"]
    estimator.output_shape_ = tuple(fitted["output_shape"]) if fitted.get("output_shape") else None
    estimator.seed_ = fitted.get("seed")
    estimator.best_epoch_ = fitted.get("best_epoch")
    estimator.hisso_ = metadata["hisso"]
    estimator.history_ = None
    if hasattr(estimator, "_resolved_builder"):
        estimator.conditioning_builder_ = estimator._resolved_builder() if fitted["conditioning_dim"] else None
    return estimator
