"""The run contract: what a run writes, what a sweep records, and how trials are ranked.

One module, standard library only, imported by both sides of every file a run leaves behind:

- the writers: ``psann.runs`` (metrics.json), ``psann.runlog`` (events.csv), ``sweeps.trainable``
  (what each epoch reports to Tune), ``sweeps.stages`` (stage_status.json outcomes);
- the readers: ``sweeps.results`` (the Arrow ``trials`` and ``events`` tables), the compendium,
  the sweep summary.

It never imports torch, Ray or pyarrow, so a reader of Parquet files does not pay for them. Value
types are named by kind (``FLOAT``, ``INT``, ...); the results store maps kinds to Arrow types.
docs/run_outputs.md describes every name listed here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence, TypeVar

from psann.errors import is_finite_number  # standard library only, like this module
from psann.provenance import PROVENANCE_FIELDS  # standard library only, like this module

__all__ = [
    # value kinds
    "FLOAT", "INT", "STR", "BOOL", "TIMESTAMP", "OBJECT",
    # run statuses (metrics.json "status")
    "RUN_RUNNING", "RUN_SUCCESS", "RUN_ERROR", "RUN_INTERRUPTED", "RUN_HUNG", "RUN_STATUSES",
    # metrics.json
    "PORTFOLIO_METRIC_NAMES", "PORTFOLIO_ENTRIES", "AMP_FIELDS", "COMPILE_FIELDS", "PORTFOLIO_FIELDS",
    "METRICS_FIELDS", "METRICS_KEYS", "METRIC_COLUMNS", "flatten_keys",
    # events.csv
    "EVENT_FIELDS", "EVENT_COLUMNS", "EVENT_KINDS", "PHASES", "MAIN_PHASES", "EPOCH_RECORD_UNLOGGED",
    # Tune reports
    "TUNE_METRIC", "TUNE_MODE", "TUNE_EPOCH_KEYS", "TUNE_FINAL_KEYS",
    # trial outcomes
    "SUCCESS", "PRUNED", "ERROR", "HUNG", "INCOMPLETE", "RUNNING", "INTERRUPTED",
    "TRIAL_STATUSES", "PASSING_OUTCOMES", "UNFINISHED_STATUSES", "RUN_STATUS_TO_TRIAL_STATUS",
    "trial_outcome",
    # what kind of failure ended a run or a trial
    "ERROR_EXCEPTION", "ERROR_NON_FINITE", "ERROR_OUT_OF_MEMORY", "ERROR_HUNG", "ERROR_INTERRUPTED",
    "ERROR_KINDS", "error_kind",
    # stage outcomes
    "BUDGET_STOPPED",
    # the ranking rule
    "RANK_METRIC", "RANK_WINDOW", "RANKED_STATUSES", "BEST_TRIAL_METRIC", "BEST_TRIAL_STATUSES",
    "smoothed_loss", "ranking_value", "best_trial", "rank_trials", "rank_configurations",
    "REPEAT_KEY", "config_id", "finite_or_none",
    # the test evaluation of a sweep's top trials
    "EVALUATION_FILE", "EVALUATION_FIELDS", "EVALUATION_KEYS", "EQUITY_COLUMNS", "equity_file",
    "baseline_verdict",
    # exit codes
    "EXIT_OK", "EXIT_FAILURE", "EXIT_BAD_INPUT", "EXIT_NO_GPU", "EXIT_HUNG", "EXIT_INTERRUPTED", "EXIT_CODES",
]

# -- value kinds --------------------------------------------------------------------------------

FLOAT, INT, STR, BOOL, TIMESTAMP, OBJECT = "float", "int", "str", "bool", "timestamp", "object"

# -- run statuses: metrics.json "status" and psann.runs.RunResult.status ------------------------------

RUN_RUNNING = "running"  # the snapshot written after each epoch; a pruned trial keeps it
RUN_SUCCESS = "success"
RUN_ERROR = "error"
RUN_INTERRUPTED = "interrupted"  # Ctrl-C
RUN_HUNG = "hung"  # the run CLI's --hang-timeout: nothing was written for that long
RUN_STATUSES = (RUN_RUNNING, RUN_SUCCESS, RUN_ERROR, RUN_INTERRUPTED, RUN_HUNG)

# -- metrics.json -------------------------------------------------------------------------------

PORTFOLIO_METRIC_NAMES = ("cum_return", "log_return", "sharpe", "max_drawdown", "turnover")
# The policy's allocations and the two baselines on the same prices.
PORTFOLIO_ENTRIES = ("policy", "equal_weight", "best_buy_and_hold")

AMP_FIELDS: tuple[tuple[str, str], ...] = (("enabled", BOOL), ("dtype", STR), ("skipped_steps", INT))
# torch.compile: whether the updates ran through it, the seconds spent compiling graphs (their
# first backward included) and how many graphs were compiled (recompiles included).
COMPILE_FIELDS: tuple[tuple[str, str], ...] = (("enabled", BOOL), ("seconds", FLOAT), ("graphs", INT))
# metrics.json "portfolio", flattened with "_" (the default portfolio metrics; a reward strategy
# with its own metrics_fn adds other names, which the results store keeps as extra columns).
PORTFOLIO_FIELDS: tuple[tuple[str, str], ...] = (
    ("split", STR),
    ("trans_cost", FLOAT),
    *((f"{entry}_{name}", FLOAT) for entry in PORTFOLIO_ENTRIES for name in PORTFOLIO_METRIC_NAMES),
    ("best_buy_and_hold_asset", INT),  # column index of the asset held
)

# Every metrics.json has exactly these top-level keys (null when not applicable), in this order.
METRICS_FIELDS: tuple[tuple[str, str], ...] = (
    ("status", STR),
    ("run_name", STR),
    ("config_path", STR),
    ("estimator", STR),
    ("loss_kind", STR),  # "mse" (supervised) or "neg_reward" (HISSO)
    ("train_loss", FLOAT),
    ("val_loss", FLOAT),
    ("test_loss", FLOAT),  # on eval_split (the name is kept for readers of older runs)
    ("eval_split", STR),  # the split of test_loss, test_mse, test_reward_full and portfolio
    ("val_mse", FLOAT),
    ("test_mse", FLOAT),
    ("test_reward_full", FLOAT),
    ("best_epoch", INT),
    ("epochs_run", INT),
    ("epochs_planned", INT),
    ("reward", STR),
    ("reward_mean", FLOAT),
    ("reward_std", FLOAT),
    ("episodes", INT),
    ("transition_penalty", FLOAT),
    ("device", STR),
    ("seed", INT),
    ("duration_seconds", FLOAT),
    ("throughput_eps_per_sec", FLOAT),  # HISSO runs: episodes per second
    ("throughput_samples_per_sec", FLOAT),  # supervised runs: samples per second
    ("amp", OBJECT),  # AMP_FIELDS
    ("compile", OBJECT),  # COMPILE_FIELDS
    ("threads", INT),  # torch intra-op threads the run used
    ("portfolio", OBJECT),  # PORTFOLIO_FIELDS
    ("provenance", OBJECT),  # psann.provenance.PROVENANCE_FIELDS: code, software and machine
    ("error_kind", STR),  # ERROR_KINDS: what ended the run (null on success and while running)
    ("error", STR),  # traceback when status is "error"
)
METRICS_KEYS: tuple[str, ...] = tuple(name for name, _ in METRICS_FIELDS)

_NESTED_FIELDS = {
    "amp": AMP_FIELDS,
    "compile": COMPILE_FIELDS,
    "portfolio": PORTFOLIO_FIELDS,
    "provenance": PROVENANCE_FIELDS,
}


def _metric_columns() -> tuple[tuple[str, str], ...]:
    columns: list[tuple[str, str]] = []
    for name, kind in METRICS_FIELDS:
        if name in ("status", "error"):
            continue  # a trials table has its own status and error columns (run_status, error)
        if kind == OBJECT:
            columns.extend((f"{name}_{inner}", inner_kind) for inner, inner_kind in _NESTED_FIELDS[name])
        else:
            columns.append((name, kind))
    return tuple(columns)


# metrics.json flattened with "_" (amp.enabled -> amp_enabled), less status and error: the
# metric columns of a trials table.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = _metric_columns()


def flatten_keys(obj: Mapping[str, Any], sep: str = "_", prefix: str = "") -> dict[str, Any]:
    """A nested mapping flattened, keys joined with ``sep``; an empty or null object stays one key.

    With ``"_"`` it names metrics.json the way METRIC_COLUMNS does; with ``"."`` it turns a run
    config into the dotted paths that sweeps sample (``estimator.params.lr``).

    Example::

        flatten_keys({"amp": {"enabled": False}, "portfolio": None})
        # {"amp_enabled": False, "portfolio": None}
    """
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_keys(value, sep, name))
        else:
            out[name] = value
    return out


# -- events.csv -----------------------------------------------------------------------------------

# The columns, in the file's fixed order, and their kinds.
EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("timestamp", TIMESTAMP),  # ISO 8601 UTC
    ("elapsed_seconds", FLOAT),
    ("event", STR),  # one of EVENT_KINDS
    ("phase", STR),  # supervised, warm_start or hisso (epoch rows)
    ("epoch", INT),
    ("train_loss", FLOAT),
    ("val_loss", FLOAT),
    ("val_mse", FLOAT),
    ("reward_mean", FLOAT),
    ("reward_std", FLOAT),
    ("lr", FLOAT),
    ("episodes", INT),
    ("episodes_per_second", FLOAT),
    ("samples_per_second", FLOAT),
    ("data_seconds", FLOAT),
    ("forward_seconds", FLOAT),
    ("backward_seconds", FLOAT),
    ("optimizer_seconds", FLOAT),
    ("compile_seconds", FLOAT),  # with compile: seconds spent compiling so far in this phase
    ("compiled_graphs", INT),  # with compile: graphs compiled so far in this phase
    ("message", STR),
)
EVENT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in EVENT_FIELDS)
EVENT_KINDS = (
    "run_start", "dataset", "shuffle_policy", "epoch", "warning", "checkpoint", "error", "interrupted", "run_end",
)
PHASES = ("supervised", "warm_start", "hisso")  # the "phase" of epoch rows
MAIN_PHASES = ("supervised", "hisso")  # the phase a run's metrics describe (not the warm start)
# Keys of the training loop's per-epoch record that events.csv leaves out on purpose: loop
# bookkeeping (monitor, is_best, skipped_steps: metrics.json has amp.skipped_steps), the epoch's
# wall time (its parts are the *_seconds columns) and a duplicate of val_loss (-val_reward_mean).
EPOCH_RECORD_UNLOGGED = frozenset({"monitor", "is_best", "skipped_steps", "epoch_seconds", "val_reward_mean"})

# -- what each epoch reports to Ray Tune ------------------------------------------------------------

# What ASHA compares, Tune reports as best and the kept checkpoints are scored by: the ranking
# metric (below), the mean val_loss of the trial's last RANK_WINDOW epochs so far.
TUNE_METRIC, TUNE_MODE = "val_loss_smoothed", "min"
TUNE_EPOCH_KEYS = (
    "epoch", "train_loss", "val_loss", "val_mse", "reward_mean", "reward_std", "episodes",
    "episodes_per_second", "samples_per_second", "lr", "skipped_steps",
)
TUNE_FINAL_KEYS = ("test_loss", "test_mse", "best_epoch")  # added to the last epoch's report

# -- trial outcomes: stage_status.json "outcome" and the trials table's "status" ----------------------

SUCCESS = "SUCCESS"  # the run finished
PRUNED = "PRUNED"  # stopped by the scheduler between epochs
ERROR = "ERROR"  # the run raised, or the trial failed after its retries
HUNG = "HUNG"  # stopped by the hang rule
INCOMPLETE = "INCOMPLETE"  # ended with no usable status (or unreadable files)
RUNNING = "RUNNING"  # no runner verdict; metrics.json still says running
INTERRUPTED = "INTERRUPTED"  # no runner verdict; the run was interrupted (Ctrl-C)
TRIAL_STATUSES = (SUCCESS, PRUNED, ERROR, HUNG, INCOMPLETE, RUNNING, INTERRUPTED)
PASSING_OUTCOMES = (SUCCESS, PRUNED)  # what a stage's pass rule counts
UNFINISHED_STATUSES = (ERROR, HUNG, INCOMPLETE, INTERRUPTED)  # did not finish, not by the scheduler
# A trial's status from its metrics.json alone (a plain run folder, or no runner verdict).
RUN_STATUS_TO_TRIAL_STATUS = {
    RUN_RUNNING: RUNNING,
    RUN_SUCCESS: SUCCESS,
    RUN_ERROR: ERROR,
    RUN_INTERRUPTED: INTERRUPTED,
    RUN_HUNG: HUNG,
}

# -- error kinds: metrics.json "error_kind" and stage_status.json trials' "error_kind" ------------------

# What kind of failure ended a run or a trial, beside its message, so a reader filters failures by
# kind instead of parsing tracebacks. Null on success, while running and for a pruned trial.
ERROR_EXCEPTION = "exception"  # anything raised that is not one of the kinds below
ERROR_NON_FINITE = "non_finite"  # an epoch loss was NaN/inf (the loop raises FloatingPointError)
ERROR_OUT_OF_MEMORY = "out_of_memory"  # torch's / Ray's OutOfMemoryError, or Python's MemoryError
ERROR_HUNG = "hung"  # the hang rule ended it (run CLI --hang-timeout, or a sweep's hang_timeout_s)
ERROR_INTERRUPTED = "interrupted"  # Ctrl-C (KeyboardInterrupt)
ERROR_KINDS = (ERROR_EXCEPTION, ERROR_NON_FINITE, ERROR_OUT_OF_MEMORY, ERROR_HUNG, ERROR_INTERRUPTED)

# A status that names its kind: metrics.json's (hung, interrupted, error) or a trial outcome's.
_STATUS_ERROR_KINDS = {
    RUN_ERROR: ERROR_EXCEPTION,
    RUN_HUNG: ERROR_HUNG,
    RUN_INTERRUPTED: ERROR_INTERRUPTED,
    ERROR: ERROR_EXCEPTION,
    HUNG: ERROR_HUNG,
    INTERRUPTED: ERROR_INTERRUPTED,
}
# Out-of-memory errors are matched by the name of a class in the exception's MRO, so this module
# needs neither torch nor Ray: torch.OutOfMemoryError (torch.cuda.OutOfMemoryError is the same
# class) and ray.exceptions.OutOfMemoryError (Ray's memory monitor killed the worker).
_OUT_OF_MEMORY_TYPES = frozenset({"OutOfMemoryError"})


def _exception_kind(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls.__name__ in _OUT_OF_MEMORY_TYPES:
            return ERROR_OUT_OF_MEMORY
    if isinstance(exc, MemoryError):
        return ERROR_OUT_OF_MEMORY
    if isinstance(exc, FloatingPointError):
        return ERROR_NON_FINITE
    if isinstance(exc, KeyboardInterrupt):
        return ERROR_INTERRUPTED
    return ERROR_EXCEPTION


def error_kind(exc_or_status: BaseException | str | None) -> str | None:
    """The kind (one of ERROR_KINDS) of an exception or a failed status; None for no failure.

    Exceptions are classified by type, never by message: an OutOfMemoryError (torch, Ray) or
    MemoryError is ``out_of_memory``; FloatingPointError (what the training loop raises for a
    NaN/inf epoch loss, ``psann.supervised.check_finite_loss``) is ``non_finite``; KeyboardInterrupt
    is ``interrupted``; anything else is ``exception``. A wrapper that carries the kind of what it
    wraps (an ``error_kind`` attribute, e.g. ``sweeps.trainable.TrialRunError``) gives that kind;
    otherwise the chain of causes (``__cause__``, and Ray's ``cause``) is followed to the first
    kind more specific than ``exception``. A status gives ``hung``, ``interrupted`` or, for
    ``error``/``ERROR``, ``exception``; any other status (success, running, PRUNED, ...) or None
    gives None.

    Example::

        error_kind(FloatingPointError("hisso epoch 3: loss is nan"))  # 'non_finite'
        error_kind("hung")  # 'hung'
        error_kind("success")  # None
    """
    if exc_or_status is None:
        return None
    if isinstance(exc_or_status, str):
        return _STATUS_ERROR_KINDS.get(exc_or_status)
    if not isinstance(exc_or_status, BaseException):
        raise TypeError(f"error_kind expects an exception, a status string or None. Got {exc_or_status!r} instead.")
    seen: set[int] = set()
    exc: Any = exc_or_status
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        carried = getattr(exc, "error_kind", None)
        if isinstance(carried, str) and carried in ERROR_KINDS:
            return carried
        kind = _exception_kind(exc)
        if kind != ERROR_EXCEPTION:
            return kind
        cause = exc.__cause__
        if cause is None:
            cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError keeps the task's error here
        exc = cause
    return ERROR_EXCEPTION


# -- stage outcomes: stage_status.json "status" ------------------------------------------------------

# The stage's budget (gpu_hours / wall_minutes) was spent: no more trials were launched and the
# running ones stopped at their next report (sweeps.budget_guard). Its trials keep their outcomes.
BUDGET_STOPPED = "BUDGET_STOPPED"


def trial_outcome(run_status: str | None, *, hung: bool = False, raised: bool = False) -> str:
    """The sweep runner's verdict on a trial Tune has finished with.

    ``run_status`` is metrics.json's status (None when missing), ``hung`` whether the hang rule
    stopped it, ``raised`` whether Tune recorded an error. A trial still ``running`` was stopped by
    the scheduler between epochs: PRUNED.
    """
    if hung:
        return HUNG
    if raised or run_status == RUN_ERROR:
        return ERROR
    if run_status == RUN_SUCCESS:
        return SUCCESS
    if run_status == RUN_RUNNING:
        return PRUNED
    return INCOMPLETE


# -- the ranking rule ---------------------------------------------------------------------------------

# Trials are ranked by val_loss_smoothed: the mean val_loss of their last k main-phase epochs
# (k = RANK_WINDOW unless the sweep file sets rank_window; a trial with fewer epochs uses what it
# has). Finished and pruned trials are ranked alike: a trial that peaked early and then degraded
# does not win on its one good epoch. Ties go to the first by (stage, trial_id). Every place that
# names a best trial uses this rule: the sweep summary, Tune's metric (TUNE_METRIC), the kept
# checkpoints, the results summary, `query --top` and the compendium. With repeats a
# configuration's value is the mean over its runs (rank_configurations).
RANK_METRIC = "val_loss_smoothed"
RANK_WINDOW = 3
RANKED_STATUSES = (SUCCESS, PRUNED)
BEST_TRIAL_METRIC = RANK_METRIC  # the name older readers import
BEST_TRIAL_STATUSES = RANKED_STATUSES

T = TypeVar("T")


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool), else None."""
    if not is_finite_number(value):
        return None
    return float(value)


def smoothed_loss(values: Sequence[Any], window: int = RANK_WINDOW) -> float | None:
    """The mean of the last ``window`` values (fewer when there are fewer); None when any is not finite.

    ``values`` are a trial's per-epoch val_loss, oldest first. A non-finite value among the last
    ``window`` (a diverged epoch) makes the trial unranked rather than quietly skipped.

    Example::

        smoothed_loss([0.9, 0.5, 0.4, 0.3], 3)  # 0.4
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    tail = list(values)[-window:]
    if not tail:
        return None
    floats = [finite_or_none(v) for v in tail]
    if any(v is None for v in floats):
        return None
    return sum(floats) / len(floats)  # type: ignore[arg-type]


# With `repeats: N` a sweep runs each configuration N times; the trial config then holds the
# repeat index r under this key (Ray Tune's own name for it) and the run's seed is sweep seed + r.
REPEAT_KEY = "__trial_index__"


def config_id(params: Mapping[str, Any]) -> str:
    """A short stable id of a configuration: its sampled parameters, less the repeat index.

    Runs of one configuration (repeats) share it; the trials table has it as a column.

    Example::

        config_id({"estimator.params.lr": 0.001, "__trial_index__": 1}) == config_id({"estimator.params.lr": 0.001})
    """
    import hashlib
    import json

    body = {str(k): v for k, v in params.items() if k != REPEAT_KEY}
    text = json.dumps(body, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def ranking_value(status: Any, value: Any) -> float | None:
    """The value a trial is ranked by (lower is better), or None when it is not ranked."""
    if status not in RANKED_STATUSES:
        return None
    return finite_or_none(value)


def rank_trials(
    trials: Iterable[T],
    *,
    status_key: str = "status",
    metric: str = RANK_METRIC,
    tie_keys: tuple[str, ...] = ("stage", "trial_id"),
) -> list[T]:
    """The ranked trials, best first (unranked ones left out).

    ``trials`` are mappings or objects with the named fields; ``status_key`` names the field that
    holds the trial status (``outcome`` in stage_status.json).
    """
    keyed = []
    for trial in trials:
        value = ranking_value(_field(trial, status_key), _field(trial, metric))
        if value is None:
            continue
        keyed.append(((value, *("" if _field(trial, k) is None else str(_field(trial, k)) for k in tie_keys)), trial))
    keyed.sort(key=lambda pair: pair[0])
    return [trial for _, trial in keyed]


def best_trial(
    trials: Iterable[T],
    *,
    status_key: str = "status",
    metric: str = RANK_METRIC,
    tie_keys: tuple[str, ...] = ("stage", "trial_id"),
) -> T | None:
    """The best of ``trials`` by the ranking rule, or None when none is ranked.

    Example::

        best_trial([{"status": "SUCCESS", "val_loss_smoothed": 0.2, "trial_id": "a"},
                    {"status": "PRUNED", "val_loss_smoothed": 0.1, "trial_id": "b"}])["trial_id"]  # "b"
    """
    ranked = rank_trials(trials, status_key=status_key, metric=metric, tie_keys=tie_keys)
    return ranked[0] if ranked else None


def rank_configurations(
    trials: Iterable[T],
    *,
    config_key: str = "config_id",
    status_key: str = "status",
    metric: str = RANK_METRIC,
) -> list[dict[str, Any]]:
    """Configurations ranked by the mean of their runs' ranking values, best first.

    Each entry: ``{"config_id", "value" (the mean), "std" (population std, 0 for one run), "runs"
    (ranked runs), "trials" (every trial of the configuration, ranked or not)}``. A configuration
    none of whose runs is ranked is left out. Ties go to the smaller config_id.
    """
    groups: dict[str, list[T]] = {}
    for trial in trials:
        groups.setdefault(str(_field(trial, config_key)), []).append(trial)
    ranked: list[dict[str, Any]] = []
    for config_id, members in groups.items():
        values = [v for v in (ranking_value(_field(t, status_key), _field(t, metric)) for t in members) if v is not None]
        if not values:
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        ranked.append({"config_id": config_id, "value": mean, "std": std, "runs": len(values), "trials": members})
    ranked.sort(key=lambda entry: (entry["value"], entry["config_id"]))
    return ranked


# -- the test evaluation of a sweep's top trials --------------------------------------------------

# After each stage the top trials by the ranking rule (pruned ones included) are evaluated on the
# test split from their best checkpoint (the kept Tune checkpoint with the lowest
# val_loss_smoothed); each writes evaluation.json beside its metrics.json, which is never
# rewritten, and the equity curves of that evaluation.
EVALUATION_FILE = "evaluation.json"
EVALUATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("rank", INT),  # 1 = the stage's best trial by the ranking rule
    ("stage", STR),
    ("trial_id", STR),
    ("val_loss_smoothed", FLOAT),  # the ranking value the trial was chosen by
    ("checkpoint", STR),  # the Tune checkpoint folder evaluated (checkpoint_000004)
    ("checkpoint_epoch", INT),  # the training epoch of that checkpoint
    ("checkpoint_val_loss_smoothed", FLOAT),  # its score
    ("split", STR),  # "test"
    ("test_loss", FLOAT),
    ("test_mse", FLOAT),
    ("test_reward_full", FLOAT),
    ("portfolio", OBJECT),  # PORTFOLIO_FIELDS, as in metrics.json
    ("equity_file", STR),  # the equity curves of this evaluation (EQUITY_COLUMNS)
    ("device", STR),
    ("node_id", STR),
    ("duration_seconds", FLOAT),
    ("evaluated_at", TIMESTAMP),
    ("error", STR),  # set when the evaluation failed; the figures are null then
)
EVALUATION_KEYS: tuple[str, ...] = tuple(name for name, _ in EVALUATION_FIELDS)

# equity_<split>.csv, written by every HISSO run with prices for its eval split, and
# evaluation_equity_<split>.csv by the evaluation: one row per step, each column the wealth of one
# strategy after that step's return (net of transaction costs), starting from 1.0 before step 0.
EQUITY_COLUMNS = ("step", "policy", "equal_weight", "best_buy_and_hold")


def equity_file(split: str, *, evaluation: bool = False) -> str:
    """``equity_<split>.csv`` (a run's) or ``evaluation_equity_<split>.csv`` (the evaluation's)."""
    return f"{'evaluation_' if evaluation else ''}equity_{split}.csv"


def baseline_verdict(
    policy: Any, equal_weight: Any, best_buy_and_hold: Any = None, *, split: str = "test"
) -> str | None:
    """One plain sentence: did the policy's log return beat its baselines' on ``split``?

    The arguments are log returns after transaction costs (metrics.json ``portfolio``); None when
    the policy's or equal weight's is missing. The run CLI, the sweep's winner block and the
    compendium print it, so no one has to read it off the signs of numbers.

    Example::

        baseline_verdict(0.12, 0.09, 0.98)
        # 'On test the policy BEAT equal weight (log return +0.1200 vs +0.0900, margin +0.0300);
        #  it did NOT beat the best buy-and-hold asset (+0.9800).'
    """
    p, e = finite_or_none(policy), finite_or_none(equal_weight)
    if p is None or e is None:
        return None
    verdict = "BEAT" if p > e else "did NOT beat"
    text = f"On {split} the policy {verdict} equal weight (log return {p:+.4f} vs {e:+.4f}, margin {p - e:+.4f})"
    b = finite_or_none(best_buy_and_hold)
    if b is not None:
        text += f"; it {'also beat' if p > b else 'did NOT beat'} the best buy-and-hold asset ({b:+.4f})"
    return text + "."


# -- exit codes of every CLI ----------------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILURE = 1  # the work ran and failed (a run raised; a sweep stage failed its pass rule)
EXIT_BAD_INPUT = 2  # bad arguments, config or data, found before any work starts (argparse's code too)
EXIT_NO_GPU = 3  # the sweep: a GPU stage on a cluster that has no GPU and cannot add one
EXIT_HUNG = 124  # the run CLI's --hang-timeout: nothing written for that long (timeout(1)'s code)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention)
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "failure: the work ran and failed",
    EXIT_BAD_INPUT: "bad input: arguments, config or data (found before any work starts)",
    EXIT_NO_GPU: "a GPU stage cannot get a GPU (sweeps only; pass --allow-cpu)",
    EXIT_HUNG: "hung: the run wrote nothing for --hang-timeout seconds",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
