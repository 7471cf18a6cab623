"""Estimator files: weights as a state_dict plus a JSON metadata block with a format version.

    <path>/weights.pt       torch.save(state_dict); loaded with weights_only=True (no pickle code)
    <path>/metadata.json    class, params, fitted shapes, scaler, network depth, HISSO facts

Rewards are recorded by registry name or import path, never pickled. The optional parts are
rebuilt from JSON: an LSM expander from its spec (``params.expander``) and its input width
(``fitted.expander_in``), its masks and weights then loaded from weights.pt like any buffer; a
token embedder from its config (``params.embedder``). A custom nn.Module expander cannot be saved.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from sklearn.utils.validation import check_is_fitted

from psann import __version__
from psann.lsm import build_expander

__all__ = ["FORMAT_VERSION", "save_estimator", "load_estimator"]

# 2: conditioning_dim, standardisation shapes, deprecated-alias params, ResConv
# 3: optional parts: params.expander / params.embedder as JSON specs, fitted.expander_in
FORMAT_VERSION = 3
WEIGHTS = "weights.pt"
METADATA = "metadata.json"


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
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
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
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        state = {k: v.detach().cpu() for k, v in estimator.model_.state_dict().items()}
        torch.save(state, staging / WEIGHTS)
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        if target.exists():
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


def _expander_in(model: Any) -> int | None:
    """The expander's input width (features or channels), or None without an expander."""
    expander = getattr(model, "expander", None)
    if expander is None:
        return None
    return int(getattr(expander, "in_features", getattr(expander, "in_channels", 0)))


def _read_metadata(path: Path) -> dict[str, Any]:
    meta_path = path / METADATA
    if not path.is_dir():
        raise FileNotFoundError(f"no saved estimator at {path} (expected a directory with {METADATA} and {WEIGHTS})")
    if not meta_path.is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a saved estimator: {METADATA} or {WEIGHTS} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path} is corrupt (not valid JSON: {exc})") from exc
    if not isinstance(metadata, dict) or "format_version" not in metadata or "class" not in metadata:
        raise ValueError(f"{meta_path} is corrupt: missing 'format_version' or 'class'")
    version = metadata["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has format_version {version!r}, newer than this library reads "
            f"(<= {FORMAT_VERSION}); upgrade psann-sweeps"
        )
    return _upgrade(metadata)


def _upgrade(metadata: dict[str, Any]) -> dict[str, Any]:
    """Fill keys that older format versions lack, so every later step reads the newest format."""
    metadata.setdefault("hisso", None)
    fitted = metadata.setdefault("fitted", {})
    fitted.setdefault("first_layer_w0", None)  # absent before w0 was recorded
    fitted.setdefault("expander_in", None)  # format < 3: no optional parts
    if metadata["format_version"] < 2:
        # Format 1: dense, residual and WaveResNet estimators over feature rows, no conditioning,
        # standardisation per input feature.
        fitted.setdefault("conditioning_dim", 0)
        metadata.setdefault("scaler", {}).setdefault("shape", [int(fitted["dim_in"])])
        # Format 1 counted every value of a sample; sklearn's n_features_in_ is X.shape[1].
        fitted["n_features_in"] = int(fitted["input_shape"][0])
    return metadata


def load_estimator(cls: type, path: str | os.PathLike, *, device: str | torch.device | None = None) -> Any:
    from psann.estimators import ESTIMATORS
    from psann.estimators._base import _Standardised, resolve_device
    from psann.estimators._shared import build_embedder

    path = Path(path)
    metadata = _read_metadata(path)
    class_name = metadata["class"]
    target_cls = ESTIMATORS.get(class_name)
    if target_cls is None:
        raise ValueError(f"{path}: unknown estimator class {class_name!r}; known: {sorted(ESTIMATORS)}")
    if cls is not target_cls and not issubclass(target_cls, cls):
        raise TypeError(f"{path} holds a {class_name}, not a {cls.__name__}; load it with {class_name}.load")
    params = dict(metadata["params"])
    if device is not None:
        params["device"] = str(device) if isinstance(device, torch.device) else device
    estimator = target_cls(**params)
    resolved = resolve_device(estimator.device)
    fitted = metadata["fitted"]
    try:
        state = torch.load(path / WEIGHTS, map_location=resolved, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path / WEIGHTS} is corrupt or not a weights file: {exc}") from exc
    estimator.input_shape_ = tuple(fitted["input_shape"])  # the network's layout depends on it
    net = estimator._build_network(int(fitted["dim_in"]), int(fitted["dim_out"]))
    depth = fitted.get("depth")
    if depth is not None and hasattr(net, "add_blocks") and net.depth < depth:
        net.add_blocks(depth - net.depth)
    if fitted.get("first_layer_w0") is not None and hasattr(net, "set_first_layer_w0"):
        net.set_first_layer_w0(float(fitted["first_layer_w0"]))
    stats_shape = tuple(int(s) for s in metadata["scaler"]["shape"])
    embedder = build_embedder(estimator)
    expander = None
    if params.get("expander") is not None:
        if fitted.get("expander_in") is None:
            raise ValueError(f"{path / METADATA} is corrupt: params.expander is set but fitted.expander_in is missing")
        expander = build_expander(params["expander"], int(fitted["expander_in"]))
    model = _Standardised(
        net,
        torch.zeros(stats_shape),
        torch.ones(stats_shape),
        conditioning_dim=int(fitted["conditioning_dim"]),
        embedder=embedder,
        expander=expander,
        expander_lr=params.get("lsm_lr"),
    ).to(resolved)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path / WEIGHTS} does not match its metadata: {exc}") from exc
    model.eval()
    estimator.model_ = model
    estimator.device_ = resolved
    estimator.n_features_in_ = int(fitted["n_features_in"])
    estimator.y_was_1d_ = bool(fitted["y_was_1d"])
    estimator.output_shape_ = tuple(fitted["output_shape"]) if fitted.get("output_shape") else None
    estimator.seed_ = fitted.get("seed")
    estimator.best_epoch_ = fitted.get("best_epoch")
    estimator.hisso_ = metadata.get("hisso")
    estimator.history_ = None
    if hasattr(estimator, "_resolved_builder"):
        estimator.conditioning_builder_ = estimator._resolved_builder() if fitted["conditioning_dim"] else None
    return estimator
