"""Datasets for psann runs: validation, npz and loader sources, built-in synthetic markets.

A dataset is a plain ``dict[str, np.ndarray]`` of float32 2-D arrays with the keys in
:data:`DATASET_KEYS`; ``X_train`` is required. Rows are time steps of one series per split
(the splits are contiguous pieces of one timeline), not independent windows.

Randomness comes only from seeded ``np.random.Generator`` objects; global RNG state is never
read or changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from psann._imports import import_object

__all__ = [
    "Dataset",
    "DATASET_KEYS",
    "SPLITS",
    "validate_dataset",
    "load_npz",
    "load_loader",
    "toy_hisso_dataset",
    "regime_market_dataset",
]

Dataset = dict[str, np.ndarray]

SPLITS = ("train", "val", "test")
_KINDS = ("X", "y", "context", "prices")
DATASET_KEYS = tuple(f"{kind}_{split}" for split in SPLITS for kind in _KINDS)


def _did_you_mean(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _to_float32(key: str, value: Any, source: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()  # .float() first: numpy has no bfloat16
    raw = np.asarray(value)
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{source}: {key} must be a real numeric array; got dtype {raw.dtype}.")
    return np.array(raw, dtype=np.float32, copy=True, order="C")


def validate_dataset(data: Mapping[str, Any], *, source: str = "dataset") -> Dataset:
    """Check a dataset mapping and return a new dict of float32 2-D arrays.

    1-D ``y_*``, ``prices_*`` and ``context_*`` become (T, 1); ``X_*`` must be 2-D (T, F) with the
    same F in every split; each split's y / prices / context have as many rows as its X;
    values are finite; prices are > 0. Errors name ``source``, the key and the shapes.

    Example:
        >>> d = validate_dataset({"X_train": np.zeros((5, 2)), "y_train": np.ones(5)})
        >>> d["y_train"].shape
        (5, 1)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{source}: a dataset must be a mapping of key -> array; got {type(data).__name__}.")
    for key in data:
        if key not in DATASET_KEYS:
            raise ValueError(
                f"{source}: unknown dataset key {key!r}.{_did_you_mean(str(key), DATASET_KEYS)} "
                f"Allowed keys: {', '.join(DATASET_KEYS)}."
            )
    if "X_train" not in data:
        raise ValueError(f"{source}: the dataset must contain 'X_train'; got keys {sorted(data)}.")

    result: Dataset = {}
    for key in DATASET_KEYS:
        if key not in data:
            continue
        array = _to_float32(key, data[key], source)
        if key.startswith("X_"):
            if array.ndim != 2:
                raise ValueError(f"{source}: {key} must be 2-D (T, F); got shape {array.shape}.")
        elif array.ndim == 1:
            array = array[:, None]
        elif array.ndim != 2:
            raise ValueError(f"{source}: {key} must be 1-D (T,) or 2-D (T, K); got shape {array.shape}.")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"{source}: {key} must not be empty; got shape {array.shape}.")
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{source}: {key} must be finite; got {array[index]} at index {index}.")
        if key.startswith("prices_") and (array <= 0).any():
            index = tuple(int(i) for i in np.argwhere(array <= 0)[0])
            raise ValueError(f"{source}: {key} must be > 0; got {array[index]} at index {index}.")
        result[key] = array

    for kind in _KINDS:
        widths = {key: result[key].shape for key in (f"{kind}_{split}" for split in SPLITS) if key in result}
        if len({shape[1] for shape in widths.values()}) > 1:
            shapes = ", ".join(f"{key} {shape}" for key, shape in widths.items())
            raise ValueError(f"{source}: every {kind}_* split must have the same number of columns; got {shapes}.")
    for split in SPLITS:
        x_key = f"X_{split}"
        for kind in ("y", "context", "prices"):
            key = f"{kind}_{split}"
            if key not in result:
                continue
            if x_key not in result:
                raise ValueError(f"{source}: {key} is given but {x_key} is missing; add {x_key} or drop {key}.")
            if result[key].shape[0] != result[x_key].shape[0]:
                raise ValueError(
                    f"{source}: {key} must have as many rows as {x_key}; "
                    f"got {key} {result[key].shape} and {x_key} {result[x_key].shape}."
                )
    return result


def load_npz(path: Union[str, Path]) -> Dataset:
    """Load and validate a dataset saved with ``np.savez`` (no pickled objects allowed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {str(path)!r}.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise ValueError(f"{path}: cannot load without pickle ({exc}).") from exc
    return validate_dataset(arrays, source=str(path))


def _import_callable(path: str, field: str) -> Callable[..., Any]:
    """Import ``"pkg.mod:func"`` or ``"pkg.mod.func"``; ValueError naming ``field`` if that fails."""
    if "." not in path.replace(":", "."):
        raise ValueError(f"{field}: expected an import path like 'package.module.function'; got {path!r}.")
    try:
        obj = import_object(path)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{field}: cannot import {path!r} ({exc}).") from exc
    if not callable(obj):
        raise ValueError(f"{field}: {path!r} is a {type(obj).__name__}, not a callable.")
    return obj


def load_loader(dotted_path: str, kwargs: Mapping[str, Any] | None = None) -> Dataset:
    """Import ``dotted_path`` (``"pkg.mod.func"`` or ``"pkg.mod:func"``), call it with ``kwargs``
    and validate the mapping it returns.

    Example:
        >>> d = load_loader("psann.data.toy_hisso_dataset", {"steps": 64})
        >>> d["X_train"].shape
        (38, 4)
    """
    if not isinstance(dotted_path, str):
        raise TypeError(f"data.loader must be an import path string; got {type(dotted_path).__name__}.")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError(f"data.kwargs must be a mapping; got {type(kwargs).__name__}.")
    loader = _import_callable(dotted_path.strip(), "data.loader")
    data = loader(**dict(kwargs or {}))
    if not isinstance(data, Mapping):
        raise TypeError(f"data.loader {dotted_path!r} must return a mapping of arrays; got {type(data).__name__}.")
    return validate_dataset(data, source=f"data.loader {dotted_path}")


def _split_rows(steps: int, train_fraction: float, val_fraction: float) -> tuple[slice, slice, slice]:
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1); got {train_fraction!r}.")
    if not 0.0 < val_fraction < 1.0 or train_fraction + val_fraction >= 1.0:
        raise ValueError(
            "val_fraction must be in (0, 1) with train_fraction + val_fraction < 1; "
            f"got train_fraction={train_fraction!r}, val_fraction={val_fraction!r}."
        )
    n_train = int(steps * train_fraction)
    n_val = int(steps * val_fraction)
    n_test = steps - n_train - n_val
    if min(n_train, n_val, n_test) < 2:
        raise ValueError(
            f"steps={steps} with train_fraction={train_fraction} and val_fraction={val_fraction} "
            f"gives splits of {n_train}/{n_val}/{n_test} rows; each needs at least 2."
        )
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, steps)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _assemble(x: np.ndarray, y: np.ndarray, prices: np.ndarray, splits, source: str) -> Dataset:
    data: dict[str, np.ndarray] = {}
    for split, rows in zip(SPLITS, splits):
        data[f"X_{split}"] = x[rows]
        data[f"y_{split}"] = y[rows]
        data[f"prices_{split}"] = prices[rows]
    return validate_dataset(data, source=source)


def toy_hisso_dataset(
    steps: int = 512,
    features: int = 4,
    seed: int = 0,
    train_fraction: float = 0.6,
    val_fraction: float = 0.2,
    assets: int = 2,
) -> Dataset:
    """A small smooth market for smoke tests: harmonic inputs, linear targets, prices from targets.

    ``X`` (steps, features) is one time series: each column a sum of three sinusoids with random
    periods (8 to 96 steps) and phases, plus Gaussian noise (std 0.1). ``y = X @ W + noise``
    (assets columns, standardised). Prices start at 100 and move by ``exp(0.01 * y_t)`` from
    step t to t+1, so ``y_t`` is the scaled next-step log return: predictable from ``X_t``, and
    oscillating, so prices rise and fall. Split contiguously into train / val / test.

    Example:
        >>> toy_hisso_dataset(steps=100, seed=1)["prices_test"].shape
        (20, 2)
    """
    steps = _check_int("steps", steps, 6)
    features = _check_int("features", features, 1)
    assets = _check_int("assets", assets, 1)
    splits = _split_rows(steps, train_fraction, val_fraction)
    rng = np.random.default_rng(seed)

    t = np.arange(steps, dtype=np.float64)[:, None, None]
    periods = rng.uniform(8.0, 96.0, size=(1, features, 3))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(1, features, 3))
    amplitudes = rng.uniform(0.5, 1.0, size=(1, features, 3))
    x = (amplitudes * np.sin(2.0 * np.pi * t / periods + phases)).sum(axis=2)
    x = x + 0.1 * rng.standard_normal((steps, features))

    weights = rng.standard_normal((features, assets)) / np.sqrt(features)
    y = x @ weights + 0.05 * rng.standard_normal((steps, assets))
    y = (y - y.mean(axis=0)) / (y.std(axis=0) + 1e-12)

    log_prices = np.vstack([np.zeros((1, assets)), np.cumsum(0.01 * y[:-1], axis=0)])
    prices = 100.0 * np.exp(log_prices)
    return _assemble(x, y, prices, splits, source="toy_hisso_dataset")


# Regimes of regime_market_dataset: 0 bull, 1 sideways, 2 bear.
_REGIME_TRANSITIONS = np.array(
    [
        [0.980, 0.012, 0.008],
        [0.015, 0.970, 0.015],
        [0.020, 0.015, 0.965],
    ]
)
_REGIME_DRIFT = np.array([0.0008, 0.0, -0.002])  # mean log return per step, before asset jitter
_REGIME_VOLATILITY = np.array([0.008, 0.010, 0.020])


def regime_market_dataset(
    steps: int = 3000,
    assets: int = 4,
    features: int = 8,
    seed: int = 0,
    train_fraction: float = 0.6,
    val_fraction: float = 0.2,
    signal_strength: float = 1.0,
) -> Dataset:
    """A regime-switching multi-asset market whose inputs carry a learnable, noisy signal.

    Generative process (all draws from ``np.random.default_rng(seed)``):

    1. A hidden regime ``s_t`` in {bull, sideways, bear} follows a sticky Markov chain (mean
       stay of roughly 30 to 50 steps). Each regime has a base drift and volatility per step
       (bull +0.0008 / 0.008, sideways 0 / 0.010, bear -0.002 / 0.020), jittered per asset;
       in the bear regime assets fall together, so prices have deep drawdowns and holding
       everything long is not always a win.
    2. Each asset has a persistent idiosyncratic expected return ``alpha_{t,m}``, an AR(1)
       process (coefficient 0.97, stationary std 0.002): the cross-sectional edge.
    3. The expected log return from t to t+1 is ``e_{t,m} = drift[s_t, m] + alpha_{t,m}``; the
       realised one is ``y_{t,m} = e_{t,m} + vol[s_t, m] * z_{t,m}`` with ``z`` i.i.d. N(0, 1).
       Prices start at 100 and ``P_{t+1} = P_t * exp(y_t)``. ``y`` (steps, assets) is the
       next-step log return, aligned with ``X_t``.
    4. Features at step t, columns in this order:
       - ``0..assets-1``: leading indicators ``signal_strength * e_{t,m} / std(e) + N(0, 1)``,
         noisy views of each asset's expected next return (known at t, never the noise z);
       - ``assets`` (if ``features > assets``): a noisy bear-regime indicator
         ``signal_strength * [s_t == bear] + N(0, 1)``;
       - the rest: distractors (AR(1) noise and random sinusoids) unrelated to returns.

    A policy mapping ``X_t`` to allocations evaluated on ``P_{t+1} / P_t`` can therefore beat the
    equal-weight portfolio, which ignores the signal. ``signal_strength=0`` removes it.

    Example:
        >>> d = regime_market_dataset(steps=500, seed=0)
        >>> d["X_train"].shape, d["y_test"].shape
        ((300, 8), (100, 4))
    """
    steps = _check_int("steps", steps, 6)
    assets = _check_int("assets", assets, 1)
    features = _check_int("features", features, assets)
    signal_strength = float(signal_strength)
    if not np.isfinite(signal_strength) or signal_strength < 0:
        raise ValueError(f"signal_strength must be a finite number >= 0; got {signal_strength!r}.")
    splits = _split_rows(steps, train_fraction, val_fraction)
    rng = np.random.default_rng(seed)

    drift = _REGIME_DRIFT[:, None] + rng.normal(0.0, 0.0003, size=(3, assets))
    volatility = _REGIME_VOLATILITY[:, None] * rng.uniform(0.8, 1.25, size=(3, assets))

    regimes = np.empty(steps, dtype=np.int64)
    regimes[0] = rng.integers(3)
    uniforms = rng.random(steps)
    cumulative = np.cumsum(_REGIME_TRANSITIONS, axis=1)
    for t in range(1, steps):
        regimes[t] = min(int(np.searchsorted(cumulative[regimes[t - 1]], uniforms[t], side="right")), 2)

    phi, alpha_std = 0.97, 0.002
    innovations = rng.normal(0.0, alpha_std * np.sqrt(1.0 - phi**2), size=(steps, assets))
    alpha = np.empty((steps, assets))
    alpha[0] = rng.normal(0.0, alpha_std, size=assets)
    for t in range(1, steps):
        alpha[t] = phi * alpha[t - 1] + innovations[t]

    expected = drift[regimes] + alpha
    y = expected + volatility[regimes] * rng.standard_normal((steps, assets))
    prices = 100.0 * np.exp(np.vstack([np.zeros((1, assets)), np.cumsum(y[:-1], axis=0)]))

    x = np.empty((steps, features))
    x[:, :assets] = signal_strength * expected / (expected.std() + 1e-12) + rng.standard_normal((steps, assets))
    if features > assets:
        bear = (regimes == 2).astype(np.float64)
        x[:, assets] = signal_strength * bear + rng.standard_normal(steps)
    n_distractors = features - assets - 1
    if n_distractors > 0:
        noise = rng.standard_normal((steps, n_distractors))
        ar_noise = np.empty_like(noise)
        ar_noise[0] = noise[0]
        for t in range(1, steps):
            ar_noise[t] = 0.9 * ar_noise[t - 1] + np.sqrt(1 - 0.9**2) * noise[t]
        periods = rng.uniform(20.0, 200.0, size=n_distractors)
        phases = rng.uniform(0.0, 2.0 * np.pi, size=n_distractors)
        waves = np.sin(2.0 * np.pi * np.arange(steps)[:, None] / periods + phases)
        x[:, assets + 1 :] = np.where(np.arange(n_distractors) % 2 == 0, ar_noise, waves)
    return _assemble(x, y, prices, splits, source="regime_market_dataset")
