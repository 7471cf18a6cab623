"""What a saved estimator's metadata.json may hold, and whether weights.pt fits it.

The format (FORMAT_VERSION, the file names) and the checks load_estimator runs before it builds
anything: metadata.json read as untrusted input, every field the loader uses checked (a
ValidationError keyed by its place, ``metadata.json: fitted.dim_in``) and older formats upgraded;
then the network it describes, built on the meta device, compared tensor by tensor with weights.pt
and given two samples of fitted.input_shape.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from psann.errors import ValidationError, short_repr
from psann.estimators._params import Bool, Int, NoneOr, Options, Real
from psann.hisso.options import PRIMARY_TRANSFORMS
from psann.lsm import LSMSpec


# 2: conditioning_dim, standardisation shapes, deprecated-alias params, ResConv
# 3: optional parts: params.expander / params.embedder as JSON specs, fitted.expander_in
FORMAT_VERSION = 3
WEIGHTS = "weights.pt"
METADATA = "metadata.json"


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

# -- metadata against weights.pt ----------------------------------------------------------------


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
