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
weights.pt; only then is the real network built.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from sklearn.utils.validation import check_is_fitted

from psann import __version__
from psann.activations import SineConfig
from psann.errors import ValidationError, short_repr, unknown_key
from psann.estimators._params import Bool, Int, NoneOr, Options, Real
from psann.hisso.options import PRIMARY_TRANSFORMS
from psann.lsm import LSMSpec, build_expander
from psann.runlog import shared_mode

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


# -- metadata.json as a schema ------------------------------------------------------------------


@dataclass(frozen=True)
class _Type:
    types: tuple[type, ...]
    text: str

    def check(self, value: Any) -> bool:
        return isinstance(value, self.types) and not isinstance(value, bool)

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Sizes:
    allow_empty: bool = False

    def check(self, value: Any) -> bool:
        return isinstance(value, list) and (self.allow_empty or bool(value)) and all(Int(1).check(v) for v in value)

    def describe(self) -> str:
        return "a list of ints >= 1" if self.allow_empty else "a non-empty list of ints >= 1"


_MAPPING = _Type((dict,), "a mapping")
_TEXT = _Type((str,), "a string")
# (rule, required): what the loader reads from each section. Keys it does not read are ignored.
_FITTED = {
    "input_shape": (_Sizes(), True),
    "n_features_in": (Int(1), True),
    "dim_in": (Int(1), True),
    "dim_out": (Int(1), True),
    "y_was_1d": (Bool(), True),
    "conditioning_dim": (Int(0), True),
    "output_shape": (NoneOr(_Sizes(allow_empty=True)), False),
    "depth": (NoneOr(Int(0)), False),
    "expander_in": (NoneOr(Int(1)), False),
    "first_layer_w0": (NoneOr(Real(0.0, low_open=True)), False),
    "seed": (NoneOr(Int()), False),
    "best_epoch": (NoneOr(Int()), False),
}
_HISSO = {
    "window": (Int(1), True),
    "primary_transform": (Options(PRIMARY_TRANSFORMS), True),
    "transition_penalty": (Real(), True),
    "reward": (_TEXT, True),
    "context_source": (_TEXT, True),
    "output_dim": (Int(1), True),
    "reward_spec": (_Type((str, dict), "a reward name or a mapping"), False),
    "batch_episodes": (Int(1), False),
    "updates_per_epoch": (Int(1), False),
    "input_noise": (Real(0.0), False),
    "warm_start": (Bool(), False),
    "episodes": (Int(0), False),
}
# Fields that are a tensor dimension (sizes) or a count of layers (counts) of the network they
# describe: none can exceed the largest dimension / the number of tensors in weights.pt. Checked
# before anything is built, so a tampered size (hidden_units = 10**9) allocates nothing.
_SIZE_FIELDS = (
    "fitted.dim_in", "fitted.dim_out", "fitted.conditioning_dim", "fitted.expander_in",
    "params.hidden_units", "params.hidden_width", "params.conv_channels", "params.hidden_channels",
    "params.context_dim", "params.kernel_size", "params.expander.output_dim", "params.expander.out_channels",
    "params.expander.hidden_units", "params.expander.kernel_size", "params.embedder.dim",
)  # fmt: skip
_COUNT_FIELDS = (
    "fitted.depth", "params.hidden_layers", "params.depth", "params.progressive_depth_initial",
    "params.expander.hidden_layers",
)  # fmt: skip
_INT_LIMIT = 2**63  # beyond int64: no size, seed or count; math.isfinite would overflow on it


def _bad(field: str, reason: str, where: Path) -> ValidationError:
    """The error for one field of metadata.json: keyed ``metadata.json: fitted.dim_in``, the file's
    path at the end of the reason."""
    return ValidationError(f"{METADATA}: {field}" if field else METADATA, f"{reason} (in {where})")


def _under_params(exc: ValidationError, where: Path) -> ValidationError:
    """An estimator's own parameter error (``hidden_units``) as a metadata.json one (``params.hidden_units``)."""
    return _bad(f"params.{exc.key}" if exc.key else "params", exc.reason, where)


def _check_fields(section: str, schema: dict[str, tuple[Any, bool]], values: dict[str, Any], where: Path) -> None:
    for name, (rule, required) in schema.items():
        field = f"{section}.{name}" if section else name
        if name not in values:
            if required:
                raise _bad(field, f"missing; expected {rule.describe()}", where)
            continue
        if not rule.check(values[name]):
            raise _bad(field, f"expected {rule.describe()}, got {short_repr(values[name])}", where)


def _walk(value: Any, field: str) -> Iterator[tuple[str, Any]]:
    """Every (dotted field, value) in a JSON value, depth first."""
    yield field, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{field}[{index}]")


def _nested_shape(value: Any, depth: int = 0) -> tuple[int, ...] | None:
    """The shape of a rectangular nested list of finite numbers (None for anything else)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return () if math.isfinite(value) else None
    if not isinstance(value, list) or not value or depth > 8:
        return None
    shapes = {_nested_shape(item, depth + 1) for item in value}
    if len(shapes) != 1 or None in shapes:
        return None
    return (len(value), *shapes.pop())


def _read_metadata(path: Path) -> dict[str, Any]:
    meta_path = path / METADATA
    if not path.is_dir():
        raise FileNotFoundError(f"no saved estimator at {path} (expected a directory with {METADATA} and {WEIGHTS})")
    if not meta_path.is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a saved estimator: {METADATA} or {WEIGHTS} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{meta_path} is corrupt (not valid JSON: {exc})") from exc
    if not isinstance(metadata, dict):
        raise _bad("", f"expected a JSON object, got {short_repr(metadata)}", meta_path)
    for field, value in _walk(metadata, ""):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
            raise _bad(field, f"expected an int below 2**63 in size, got {short_repr(value)}", meta_path)
    version = metadata.get("format_version")
    if "format_version" not in metadata or "class" not in metadata:
        missing = "format_version" if "format_version" not in metadata else "class"
        raise _bad(missing, "missing; not a saved estimator", meta_path)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise _bad(
            "format_version",
            f"{meta_path} has format_version {version!r}, newer than this library reads (<= {FORMAT_VERSION}); "
            "upgrade psann-sweeps",
            meta_path,
        )
    if not Int(1, FORMAT_VERSION).check(version):
        raise _bad("format_version", f"expected an int in [1, {FORMAT_VERSION}], got {short_repr(version)}", meta_path)
    top = {"class": (_TEXT, True), "params": (_MAPPING, True), "fitted": (_MAPPING, True)}
    _check_fields("", top, metadata, meta_path)
    metadata = _upgrade(metadata)
    _check_fields("", {"scaler": (_MAPPING, True), "hisso": (NoneOr(_MAPPING), True)}, metadata, meta_path)
    _check_fields("fitted", _FITTED, metadata["fitted"], meta_path)
    scaler = metadata["scaler"]
    _check_fields("scaler", {"shape": (_Sizes(), True)}, scaler, meta_path)
    for name in ("mean", "std"):
        if _nested_shape(scaler.get(name)) != tuple(scaler["shape"]):
            raise _bad(
                f"scaler.{name}",
                f"expected a nested list of finite numbers of shape {tuple(scaler['shape'])} (scaler.shape), "
                f"got {short_repr(scaler.get(name))}",
                meta_path,
            )
    if metadata["hisso"] is not None:
        _check_fields("hisso", _HISSO, metadata["hisso"], meta_path)
    fitted = metadata["fitted"]
    hisso = metadata["hisso"]
    if hisso is not None and hisso["output_dim"] != fitted["dim_out"]:
        reason = f"expected fitted.dim_out ({fitted['dim_out']}), got {hisso['output_dim']}"
        raise _bad("hisso.output_dim", reason, meta_path)
    if fitted["n_features_in"] != fitted["input_shape"][0]:
        raise _bad(
            "fitted.n_features_in",
            f"expected fitted.input_shape[0] ({fitted['input_shape'][0]}), got {fitted['n_features_in']}",
            meta_path,
        )
    return metadata


def _upgrade(metadata: dict[str, Any]) -> dict[str, Any]:
    """Fill keys that older format versions lack, so every later step reads the newest format."""
    metadata.setdefault("hisso", None)
    fitted = metadata["fitted"]
    fitted.setdefault("first_layer_w0", None)  # absent before w0 was recorded
    fitted.setdefault("expander_in", None)  # format < 3: no optional parts
    if metadata["format_version"] < 2:
        # Format 1: dense, residual and WaveResNet estimators over feature rows, no conditioning,
        # standardisation per input feature.
        fitted.setdefault("conditioning_dim", 0)
        scaler = metadata.setdefault("scaler", {})
        if isinstance(scaler, dict):
            scaler.setdefault("shape", [fitted.get("dim_in")])
        # Format 1 counted every value of a sample; sklearn's n_features_in_ is X.shape[1].
        if _Sizes().check(fitted.get("input_shape")):
            fitted["n_features_in"] = fitted["input_shape"][0]
    return metadata


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


# -- metadata against weights.pt ----------------------------------------------------------------


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path / WEIGHTS} is corrupt or not a weights file: {exc}") from exc
    tensors = isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not tensors:
        raise ValueError(f"{path / WEIGHTS} is corrupt or not a weights file: expected a state_dict (names -> tensors)")
    return state


def _field_value(metadata: dict[str, Any], field: str) -> Any:
    value: Any = metadata
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_sizes(metadata: dict[str, Any], state: dict[str, torch.Tensor], where: Path) -> None:
    """No size field beyond the largest tensor dimension, no count beyond the number of tensors."""
    largest = max((max(t.shape, default=1) for t in state.values()), default=0)
    sizes = [(f, _field_value(metadata, f)) for f in _SIZE_FIELDS]
    sizes += [(f"scaler.shape[{i}]", v) for i, v in enumerate(metadata["scaler"]["shape"])]
    counts = [(f, _field_value(metadata, f)) for f in _COUNT_FIELDS]
    for limit, what, fields in ((largest, "dimension", sizes), (len(state), "tensor count", counts)):
        for field, value in fields:
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise _bad(
                    field,
                    f"weights.pt does not match its metadata: {field} = {value} exceeds the largest {what} "
                    f"in weights.pt ({limit})",
                    where,
                )


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


def _expander_shapes(spec: LSMSpec, width_in: int) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the expander a spec builds (its masks are drawn with torch.nonzero, which
    the meta device cannot run): one weight, bias and mask per layer, as psann.lsm lays them out."""
    hidden = spec.hidden_units or spec.width
    widths = [width_in] + [hidden] * (spec.hidden_layers - 1) + [spec.width]
    kernel = (spec.kernel_size,) * 2 if spec.kind == "conv2d" else ()
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (w_in, w_out) in enumerate(zip(widths, widths[1:])):
        shapes[f"expander.mask_{index}"] = shapes[f"expander.weights.{index}"] = (w_out, w_in, *kernel)
        shapes[f"expander.biases.{index}"] = (w_out,)
    return shapes


class _ShapeOfExpander(torch.nn.Module):
    """Stands in for an expander in the meta-device dry run: maps dim 1 from ``width_in`` to
    ``width_out`` (features of rows, channels of channels-first samples), nothing else."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.width_in, self.width_out = width_in, width_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.width_in:
            shape = tuple(x.shape)
            raise ValueError(f"the expander (fitted.expander_in = {self.width_in}) got inputs of shape {shape}")
        return x.new_empty((x.shape[0], self.width_out, *x.shape[2:]))


def _sample_rows(estimator: Any, metadata: dict[str, Any], where: Path) -> torch.Tensor:
    """Two samples of fitted.input_shape (meta tensors) as the estimator prepares them for its model."""
    shape = tuple(metadata["fitted"]["input_shape"])
    if estimator.embedder is not None:  # token ids arrive as a one-channel sequence
        shape = (shape[0], 1) if estimator.data_format == "channels_last" else (1, shape[0])
    try:
        return estimator._prepare_X(torch.zeros((2, *shape), device="meta"))
    except (ValueError, RuntimeError, IndexError) as exc:  # ValidationError is a ValueError
        reason = f"{type(estimator).__name__} cannot take samples of shape {shape}: {exc}"
        raise _bad("fitted.input_shape", reason, where) from None


def _meta_model(estimator: Any, metadata: dict[str, Any], where: Path) -> Any:
    """The model metadata.json describes, built on the meta device: shapes, no memory."""
    try:
        with torch.device("meta"):
            return _build_model(estimator, metadata, None)
    except ValidationError as exc:
        raise _under_params(exc, where) from None
    except (ValueError, TypeError, RuntimeError, OverflowError, KeyError, IndexError) as exc:
        raise _bad("params", f"the network it describes cannot be built: {exc}", where) from None


def _expected_shapes(model: Any, estimator: Any, metadata: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if estimator.expander is not None:
        shapes.update(_expander_shapes(LSMSpec.coerce(estimator.expander), metadata["fitted"]["expander_in"]))
    return shapes


def _dry_run(model: Any, rows: torch.Tensor, estimator: Any, metadata: dict[str, Any], where: Path) -> None:
    """Run two samples of fitted.input_shape through the meta model (what predict does, no memory):
    the weights agree with the metadata by now, so a failure means the sample shape or the layout
    parameters (preserve_shape, data_format, embedder.pool) do not fit the network."""
    fitted = metadata["fitted"]
    if estimator.expander is not None:
        model.expander = _ShapeOfExpander(fitted["expander_in"], LSMSpec.coerce(estimator.expander).width)
    k = fitted["conditioning_dim"]
    try:
        with torch.no_grad():
            model.eval()(torch.cat([rows, torch.zeros((rows.shape[0], k), device="meta")], dim=1) if k else rows)
    except NotImplementedError:  # an operation without a meta kernel: nothing more to learn here
        return
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        raise _bad(
            "fitted.input_shape",
            f"samples of shape {tuple(fitted['input_shape'])} do not fit the network the metadata describes "
            f"(fitted.dim_in = {fitted['dim_in']}, with params.preserve_shape, params.data_format, "
            f"params.embedder and params.expander as given): {exc}",
            where,
        ) from None


def _effective(metadata: dict[str, Any], estimator: Any) -> dict[str, Any]:
    """metadata with params as the estimator uses them: defaults filled, aliases folded."""
    params = estimator.canonical_params()
    if estimator.expander is not None:
        params["expander"] = LSMSpec.coerce(estimator.expander).to_dict()
    return {**metadata, "params": params}


_BLOCK = re.compile(r"^net\.(?:body|blocks|states)\.(\d+)\.")


def _blocks(names: Any) -> set[int]:
    return {int(m.group(1)) for m in map(_BLOCK.match, names) if m}


def _suspect(
    name: str,
    expected: dict[str, tuple[int, ...]],
    state: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    grows: bool,
) -> str:
    """The metadata field most likely behind a tensor that does not match (a best guess, used to
    key the error; the message gives the tensor and both shapes)."""
    if name in ("mean", "std"):
        return "scaler.shape"
    part = name.split(".", 1)[0]
    want, found = expected.get(name), tuple(state[name].shape) if name in state else None
    if want is not None and found is not None:
        if len(want) != len(found):
            return "params.preserve_shape" if ".head." in name else f"params.{part}" if part != "net" else "params"
        size = next(w for w, f in zip(want, found) if w != f)
        pool = [f for f in _SIZE_FIELDS if part in f] if part in ("expander", "embedder") else _SIZE_FIELDS
        for field in (["fitted.expander_in"] if part == "expander" else []) + list(pool):
            if _field_value(metadata, field) == size:
                return field
    if part in ("expander", "embedder"):
        return f"params.{part}"
    match = _BLOCK.match(name)
    if match is None or int(match.group(1)) in _blocks(expected) & _blocks(state):
        # A tensor inside a block (or outside all blocks) present on one side only: an option
        # that adds tensors to every layer.
        for word, field in (("state", "params.state"), ("film", "params.context_dim"), ("phase", "params.phase_shift")):
            if word in name:
                return field
        return "params"
    # A whole block more or fewer: the depth. A WaveResNet grows to fitted.depth after it is built.
    count = max(_blocks(state), default=-1) + 1
    depth = _field_value(metadata, "fitted.depth")
    if grows and depth != count:
        return "fitted.depth"
    for field in ("params.progressive_depth_initial", "params.depth", "params.hidden_layers"):
        value = _field_value(metadata, field)
        if isinstance(value, int) and value != count:
            return field
    return "fitted.depth" if depth is not None else "params"


def _check_weights(
    model: Any, estimator: Any, state: dict[str, torch.Tensor], metadata: dict[str, Any], where: Path
) -> None:
    """The first tensor whose name or shape differs from what the metadata describes, as an error."""
    expected = _expected_shapes(model, estimator, metadata)
    effective = _effective(metadata, estimator)
    grows = hasattr(model.net, "add_blocks")
    prefix = "weights.pt does not match its metadata:"
    for name, shape in expected.items():
        if name not in state:
            field = _suspect(name, expected, state, effective, grows)
            raise _bad(field, f"{prefix} it has no tensor {name!r} (expected shape {shape}) for {field}", where)
        found = tuple(state[name].shape)
        if found != shape:
            field = _suspect(name, expected, state, effective, grows)
            raise _bad(field, f"{prefix} tensor {name!r} has shape {found}, {field} describes {shape}", where)
    extra = [name for name in state if name not in expected]
    if extra:
        field = _suspect(extra[0], expected, state, effective, grows)
        raise _bad(field, f"{prefix} it holds tensors {field} does not describe: {', '.join(extra[:4])}", where)


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
