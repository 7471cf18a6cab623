"""Datasets for psann runs: validation, npz and loader sources, built-in synthetic markets, price tables.

A dataset is a plain ``dict[str, np.ndarray]`` of float32 arrays with the keys in
:data:`DATASET_KEYS`; ``X_train`` is required. Rows are time steps of one series per split
(the splits are contiguous pieces of one timeline): row n of ``X`` is the sample at step n (a
feature row (F,), or a window (C, L) / (C, H, W) ending at step n), row n of ``y``, ``prices``,
``context`` and ``cond`` (per-sample conditioning for WaveResNet) belongs to the same step.

Randomness comes only from seeded ``np.random.Generator`` objects; global RNG state is never
read or changed.

Errors are :class:`psann.errors.ValidationError` (``ValidationTypeError`` for a wrong type), keyed
by what is wrong, never only described in text:

- a problem with one array has the array's dataset key (``X_val``): a wrong shape, dtype or value,
  an unknown key, a required key that is missing (``X_train``; ``X_test`` when ``y_test`` is
  given without it), or an array that disagrees with another (``y_train`` with fewer rows than
  ``X_train``, ``X_val`` with more columns than ``X_train``: the later one is named);
- a problem with the whole dataset or file has the ``source`` as key (the npz path);
- ``load_loader``'s own arguments are keyed by their run-config names (``data.loader``,
  ``data.kwargs``), and the built-in generators' arguments by the argument name (``steps``),
  which a caller places in a config with ``err.under("data.kwargs")``.

The source (a file or a loader) is named at the end of the reason: ``(in path/to/data.npz)``.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

from psann._imports import import_callable
from psann.errors import ValidationError, ValidationTypeError, short_repr, unknown_key

__all__ = [
    "Dataset",
    "DATASET_KEYS",
    "SPLITS",
    "validate_dataset",
    "load_npz",
    "load_loader",
    "toy_hisso_dataset",
    "regime_market_dataset",
    "sequence_market_dataset",
    "price_table_dataset",
    "SEED_LIMIT",
    "check_seed",
    "COUNT_LIMIT",
]

logger = logging.getLogger(__name__)

Dataset = dict[str, np.ndarray]

SPLITS = ("train", "val", "test")
_KINDS = ("X", "y", "context", "prices", "cond")
DATASET_KEYS = tuple(f"{kind}_{split}" for split in SPLITS for kind in _KINDS)

# One bound for every seed of the project (numpy's and scikit-learn's): 0 <= seed < 2**32.
SEED_LIMIT = 2**32
# The largest count setting (units, epochs, batch sizes, ...) that is not a typo: 2**31 - 1.
COUNT_LIMIT = 2**31 - 1
# Built-in generators: a dataset of more values than this would not fit in memory anyway.
_MAX_GENERATED_VALUES = 10**8  # 800 MB of float64 while generating


def _error(
    key: str, reason: str, source: str | None, error: type[ValidationError] = ValidationError
) -> ValidationError:
    """A dataset error keyed by ``key``, its reason naming the source when there is one."""
    return error(key, f"{reason} (in {source})" if source else reason)


def _to_float32(key: str, value: Any, source: str | None) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().float().numpy()  # .float() first: numpy has no bfloat16
    raw = np.asarray(value)
    if raw.dtype.kind not in "biuf":
        raise _error(key, f"expected a real numeric array, got dtype {raw.dtype}", source, ValidationTypeError)
    return np.array(raw, dtype=np.float32, copy=True, order="C")


def validate_dataset(data: Mapping[str, Any], *, source: str | None = None) -> Dataset:
    """Check a dataset mapping and return a new dict of float32 arrays.

    1-D ``y_*``, ``prices_*``, ``context_*`` and ``cond_*`` become (T, 1); ``X_*`` is (T, F),
    (T, C, L) or (T, C, H, W) with the same sample shape in every split; ``y_*`` may also be
    per-position (T, k, *positions); each split's y / prices / context / cond have as many rows as its X;
    values are finite; prices are > 0. Errors are ValidationErrors keyed by the dataset key
    (see the module docstring); ``source`` (a file or loader) is named in their text.

    Example:
        >>> d = validate_dataset({"X_train": np.zeros((5, 2)), "y_train": np.ones(5)})
        >>> d["y_train"].shape
        (5, 1)
    """
    if not isinstance(data, Mapping):
        raise ValidationTypeError(
            source or "dataset", f"expected a mapping of dataset key -> array, got {type(data).__name__}"
        )
    for key in data:
        if key not in DATASET_KEYS:
            # A key too long to print (or not a string) is named by its short repr.
            name = key if isinstance(key, str) and len(key) <= 80 else short_repr(key)
            unknown = unknown_key(name, DATASET_KEYS)
            raise _error(unknown.key, unknown.reason, source)
    if "X_train" not in data:
        raise _error("X_train", f"missing required key; got keys {', '.join(sorted(map(str, data))) or '(none)'}", source)

    result: Dataset = {}
    for key in DATASET_KEYS:
        if key not in data:
            continue
        array = _to_float32(key, data[key], source)
        if key.startswith(("X_", "y_")):
            if key.startswith("y_") and array.ndim == 1:
                array = array[:, None]
            if not 2 <= array.ndim <= 4:
                layouts = "(T, F), (T, C, L) or (T, C, H, W)" if key.startswith("X_") else "(T,), (T, K) or per position (T, K, *positions)"
                raise _error(key, f"expected {layouts}, got shape {array.shape}", source)
        elif array.ndim == 1:
            array = array[:, None]
        elif array.ndim != 2:
            raise _error(key, f"expected a 1-D (T,) or 2-D (T, K) array, got shape {array.shape}", source)
        if array.shape[0] == 0 or 0 in array.shape[1:]:
            raise _error(key, f"expected a non-empty array, got shape {array.shape}", source)
        bad = ~np.isfinite(array)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise _error(key, f"expected finite values, got {array[index]} at index {index}", source)
        if key.startswith("prices_") and (array <= 0).any():
            index = tuple(int(i) for i in np.argwhere(array <= 0)[0])
            raise _error(key, f"expected prices > 0, got {array[index]} at index {index}", source)
        result[key] = array

    for kind in _KINDS:
        shapes = {key: result[key].shape for key in (f"{kind}_{split}" for split in SPLITS) if key in result}
        samples = [shape[1:] for shape in shapes.values()]
        for key, shape in shapes.items():
            if shape[1:] != samples[0]:  # the first split that disagrees with the earliest one is named
                listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
                raise _error(key, f"expected the same sample shape in every {kind}_* split, got {listed}", source)
    for split in SPLITS:
        x_key = f"X_{split}"
        for kind in ("y", "context", "prices", "cond"):
            key = f"{kind}_{split}"
            if key not in result:
                continue
            if x_key not in result:
                raise _error(x_key, f"missing, but {key} is given; add {x_key} or drop {key}", source)
            if result[key].shape[0] != result[x_key].shape[0]:
                raise _error(
                    key,
                    f"expected as many rows as {x_key}, got {key} {result[key].shape} and {x_key} {result[x_key].shape}",
                    source,
                )
    return result


def load_npz(path: Union[str, Path]) -> Dataset:
    """Load and validate a dataset saved with ``np.savez`` (no pickled objects allowed).

    Errors in its arrays are keyed by the array's name; a file that cannot be read as an npz of
    plain arrays is keyed by its path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {str(path)!r}.")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy array or pickle-free other format
            raise ValueError(f"it holds a single {type(loaded).__name__}, not named arrays (save with np.savez)")
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        # Object arrays need pickle, which we refuse; a truncated or corrupt archive; not an npz at all.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        reason = reason if len(reason) <= 200 else reason[:197] + "..."
        raise ValidationError(str(path), f"cannot load as an npz of plain arrays without pickle ({reason})") from exc
    return validate_dataset(arrays, source=str(path))


def load_loader(dotted_path: str, kwargs: Mapping[str, Any] | None = None) -> Dataset:
    """Import ``dotted_path`` (``"pkg.mod.func"`` or ``"pkg.mod:func"``), call it with ``kwargs``
    and validate the mapping it returns.

    Example:
        >>> d = load_loader("psann.data.toy_hisso_dataset", {"steps": 64})
        >>> d["X_train"].shape
        (38, 4)
    """
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValidationTypeError.expected("data.kwargs", "a mapping", kwargs)
    loader = import_callable(dotted_path, "data.loader")
    data = loader(**dict(kwargs or {}))
    if not isinstance(data, Mapping):
        raise ValidationTypeError(
            "data.loader", f"{short_repr(dotted_path)} returned a {type(data).__name__}, expected a mapping of arrays"
        )
    return validate_dataset(data, source=f"data.loader {dotted_path.strip()}")


def _split_rows(
    steps: int, train_fraction: float, val_fraction: float, rows_key: str = "steps"
) -> tuple[slice, slice, slice]:
    """Contiguous train / val / test slices of ``steps`` rows; ``rows_key`` is blamed for too few rows."""
    if not _is_fraction(train_fraction):
        raise ValidationError.expected("train_fraction", "a number in (0, 1)", train_fraction)
    if not _is_fraction(val_fraction) or train_fraction + val_fraction >= 1.0:
        raise ValidationError(
            "val_fraction",
            "expected a number in (0, 1) with train_fraction + val_fraction < 1, "
            f"got train_fraction={train_fraction!r}, val_fraction={val_fraction!r}",
        )
    n_train = int(steps * train_fraction)
    n_val = int(steps * val_fraction)
    n_test = steps - n_train - n_val
    if min(n_train, n_val, n_test) < 2:
        raise ValidationError(
            rows_key,
            f"{steps} rows with train_fraction={train_fraction} and val_fraction={val_fraction} "
            f"gives splits of {n_train}/{n_val}/{n_test} rows; each needs at least 2",
        )
    return slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, steps)


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and 0.0 < value < 1.0


def _check_int(name: str, value: Any, minimum: int, maximum: int = COUNT_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError.expected(name, f"an int >= {minimum}", value)
    if value > maximum:
        raise ValidationError.expected(name, f"an int in [{minimum}, {maximum}]", value)
    return int(value)


def check_seed(value: Any, key: str = "seed", *, error: type[ValidationError] = ValidationError) -> int:
    """``value`` as an int when it is a seed in [0, 2**32) (the project's one bound), else ``error``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < SEED_LIMIT:
        raise error.expected(key, "an int in [0, 2**32)", value)
    return int(value)


def _check_size(steps: int, *widths: int) -> None:
    """Refuse a generated dataset too large to hold, before allocating it."""
    total = steps
    for width in widths:
        total *= width
    if total > _MAX_GENERATED_VALUES:
        dims = " x ".join(str(v) for v in (steps, *widths))
        raise ValidationError("steps", f"{dims} = {total} values; a generated dataset holds at most {_MAX_GENERATED_VALUES}")


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
    _check_size(steps, features + assets, 3)
    splits = _split_rows(steps, train_fraction, val_fraction)
    rng = np.random.default_rng(check_seed(seed))

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


def _regime_market(
    steps: int, assets: Any, features: Any, seed: Any, signal_strength: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The regime market's per-step features, next-step log returns and prices (see regime_market_dataset)."""
    assets = _check_int("assets", assets, 1)
    features = _check_int("features", features, assets)
    _check_size(steps, features + assets)
    if (
        isinstance(signal_strength, bool)
        or not isinstance(signal_strength, (int, float, np.number))
        or not np.isfinite(signal_strength)
        or signal_strength < 0
    ):
        raise ValidationError.expected("signal_strength", "a finite number >= 0", signal_strength)
    signal_strength = float(signal_strength)
    rng = np.random.default_rng(check_seed(seed))

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
    return x, y, prices


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
    splits = _split_rows(steps, train_fraction, val_fraction)
    x, y, prices = _regime_market(steps, assets, features, seed, signal_strength)
    return _assemble(x, y, prices, splits, source="regime_market_dataset")


def sequence_market_dataset(
    steps: int = 3000,
    assets: int = 4,
    features: int = 8,
    lookback: int = 128,
    seed: int = 0,
    train_fraction: float = 0.6,
    val_fraction: float = 0.2,
    signal_strength: float = 1.0,
) -> Dataset:
    """The regime market as channels-first windows: the input shape of the seeds' WaveResNet runs.

    The market is :func:`regime_market_dataset`'s (same seed, same prices). Row n of ``X`` is the
    window of the past ``lookback`` steps of every feature ending at step n, shape
    (features, lookback), oldest step first; ``y`` (next-step log returns) and ``prices`` are
    aligned at step n. The first ``lookback - 1`` steps have no full window and are dropped, so
    the splits (contiguous, in time order) share ``steps - lookback + 1`` rows.

    Example:
        >>> d = sequence_market_dataset(steps=400, lookback=32, seed=0)
        >>> d["X_train"].shape, d["prices_train"].shape
        ((221, 8, 32), (221, 4))
    """
    steps = _check_int("steps", steps, 6)
    lookback = _check_lookback(lookback, steps, "steps")
    _check_size(steps, _check_int("features", features, 1), lookback)
    x, y, prices = _regime_market(steps, assets, features, seed, signal_strength)
    windows = _windows(x, lookback)
    splits = _split_rows(windows.shape[0], train_fraction, val_fraction)
    return _assemble(windows, y[lookback - 1 :], prices[lookback - 1 :], splits, source="sequence_market_dataset")


def _check_lookback(lookback: Any, steps: int, steps_name: str) -> int:
    lookback = _check_int("lookback", lookback, 1)
    if steps - lookback + 1 < 6:
        raise ValidationError(
            "lookback", f"expected at most {steps_name} - 5 = {steps - 5} so every split keeps rows, got {lookback}"
        )
    return lookback


def _windows(x: np.ndarray, lookback: int) -> np.ndarray:
    """Channels-first windows (rows - lookback + 1, features, lookback) of a (rows, features) series:
    window n holds steps n .. n + lookback - 1, oldest first, so it ends at step n + lookback - 1."""
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(x, lookback, axis=0))


def price_table_dataset(
    path: Union[str, Path],
    time_column: str | None = None,
    assets: list[str] | None = None,
    features: list[str] | tuple[str, ...] = (),
    lookback: int | None = None,
    train_fraction: float | None = None,
    val_fraction: float | None = None,
    val_start: Any = None,
    test_start: Any = None,
    max_gap: float | None = 5.0,
    time_format: str | None = None,
    log_returns: bool = True,
) -> Dataset:
    """Your own market: a CSV or Parquet price table as a dataset like :func:`regime_market_dataset`'s.

    The file has a time column (``time_column``, default the first column: ISO dates or
    datetimes, or numbers; other text layouts with ``time_format``), one price column per asset
    (``assets``, default every other column that is not in ``features``) and optional feature
    columns (``features``). Rows may come in any order: they are sorted by time, then refused
    with the time value and file row named (a ValidationError keyed ``path``) when a time repeats,
    a step between times is more than ``max_gap`` times the median step (default 5: weekends and
    holiday weekends of a business-day calendar pass; ``None`` allows any gap), or a price is
    missing or <= 0.

    At step t the features are the log returns ``log(P_t / P_{t-1})`` of every asset (unless
    ``log_returns=False``) followed by the feature columns' values at t; ``y`` is the next log
    return ``log(P_{t+1} / P_t)`` and ``prices`` is ``P_t`` (the HISSO reward and the portfolio
    metrics read ``P_{t+1} / P_t`` from consecutive rows). The first and last times have no
    past or no next return and are dropped. With ``lookback``, row n of ``X`` is the
    channels-first window (features, lookback) of the steps ending at n, as in
    :func:`sequence_market_dataset`; the first ``lookback - 1`` steps are dropped.

    Splits are contiguous in time: by fraction (``train_fraction`` 0.6, ``val_fraction`` 0.2 by
    default) or by date: ``val_start`` and ``test_start`` are the first times of the validation
    and test splits (``"2023-07-03"``, a ``datetime.date``, or a number for a numeric time
    column). Give fractions or dates, not both.

    Example:
        >>> d = price_table_dataset("docs/data/prices_small.csv", features=["risk_index"], lookback=16)
        >>> d["X_train"].shape, d["prices_train"].shape
        ((301, 5, 16), (301, 4))
    """
    from psann._price_table import date_splits, format_time, read_price_table

    if not isinstance(log_returns, bool):
        raise ValidationTypeError.expected("log_returns", "true or false", log_returns)
    table = read_price_table(
        path, time_column=time_column, assets=assets, features=features, max_gap=max_gap, time_format=time_format
    )
    if not log_returns and not table.feature_columns:
        raise ValidationError("features", "expected at least one feature column when log_returns is false, got none")
    returns = np.diff(np.log(table.prices), axis=0)  # row t-1: log(P_t / P_{t-1})
    parts = ([returns[:-1]] if log_returns else []) + [table.features[1:-1]]
    x = np.concatenate(parts, axis=1)  # steps 1 .. T-2: a past and a next return
    y, prices, times = returns[1:], table.prices[1:-1], table.times[1:-1]
    if len(times) < 6:
        raise ValidationError(
            "path", f"expected at least 8 rows (6 after the first and last), got {len(table.times)} (in {table.source})"
        )
    if lookback is not None:
        lookback = _check_lookback(lookback, len(times), f"the {len(times)} usable rows")
        x, y, prices, times = _windows(x, lookback), y[lookback - 1 :], prices[lookback - 1 :], times[lookback - 1 :]

    if val_start is None and test_start is None:
        splits = _split_rows(
            len(times),
            0.6 if train_fraction is None else train_fraction,
            0.2 if val_fraction is None else val_fraction,
            rows_key="path",
        )
    else:
        if train_fraction is not None or val_fraction is not None:
            raise ValidationError(
                "val_start" if val_start is not None else "test_start",
                "expected split dates (val_start, test_start) or fractions (train_fraction, val_fraction), not both; "
                f"got val_start={short_repr(val_start)}, test_start={short_repr(test_start)}, "
                f"train_fraction={train_fraction!r}, val_fraction={val_fraction!r}",
            )
        splits = date_splits(times, val_start, test_start)
    logger.info(
        "price table %s: %s",
        table.source,
        ", ".join(
            f"{split} {format_time(times[rows.start])}..{format_time(times[rows.stop - 1])} ({rows.stop - rows.start} rows)"
            for split, rows in zip(SPLITS, splits)
        ),
    )
    return _assemble(x, y, prices, splits, source=f"price_table_dataset {table.source}")

