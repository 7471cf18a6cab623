"""Ordered sweep stages: gating, Tuner wiring, per-trial outcomes, summaries.

Each stage is its own Tune experiment under the sweep folder (``<sweep>/<stage>/``). A stage runs to
completion before the next starts; a stage that fails its pass rule stops the sweep, so no GPU trial
is ever scheduled after a failed smoke stage. A GPU stage starts only when the cluster has GPUs or
an autoscaler can add them, or when CPU fallback was allowed (then it runs on CPU, recorded so).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Repeater

from psann.contract import (
    BUDGET_STOPPED,
    ERROR,
    ERROR_HUNG,
    ERROR_KINDS,
    HUNG,
    INCOMPLETE,
    EVALUATION_FILE,
    PASSING_OUTCOMES,
    PRUNED,
    REPEAT_KEY,
    SUCCESS,
    TUNE_METRIC,
    TUNE_MODE,
    UNFINISHED_STATUSES,
    best_trial,
    config_id,
    error_kind,
    finite_or_none,
    rank_configurations,
    rank_trials,
    trial_outcome,
)
from psann.provenance import collect_provenance
from sweeps.budget import BUDGET_RECORD, GpuPrice, describe_estimates, estimate_stage, measure_epoch_seconds, smoke_stage
from sweeps.budget_guard import BudgetGuard
from sweeps.spec import StageSpec, SweepSpec, to_param_space
from sweeps.storage import SweepStore
from sweeps import heartbeat
from sweeps.trainable import hisso_trial
from sweeps.watchdog import HangGuard

__all__ = ["StageResult", "TrialOutcome", "GPUUnavailableError", "StageInterruptedError", "run_stage", "run_sweep", "format_summary", "gpu_capacity"]

logger = logging.getLogger(__name__)

STAGE_STATUS = "stage_status.json"
STAGE_COMPLETED = "COMPLETED"  # stage_status.json "status": every trial ran (else psann.contract.BUDGET_STOPPED)
KEEP_CHECKPOINTS = 4  # Tune checkpoints kept per trial


class GPUUnavailableError(RuntimeError):
    """A GPU stage was asked for on a cluster that has no GPU and cannot add one."""


class StageInterruptedError(RuntimeError):
    """Tune returned before every trial of a stage finished (Ctrl-C / SIGINT): resume the sweep."""

    def __init__(self, stage: str, finished: int, expected: int) -> None:
        super().__init__(
            f"stage {stage!r} was interrupted with {finished} of {expected} trials finished; its state is saved: "
            "continue it with --resume (finished trials are not re-run)"
        )
        self.stage = stage


@dataclass(frozen=True)
class TrialOutcome:
    trial_id: str
    trial_dir: str
    tune_status: str  # TERMINATED or ERROR
    outcome: str  # psann.contract.trial_outcome: SUCCESS, PRUNED, ERROR, HUNG or INCOMPLETE
    iterations: int | None
    node_id: str | None
    device: str | None
    val_loss: float | None  # best val_loss of the run (metrics.json), else the last reported
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # psann.contract.ERROR_KINDS: what ended an ERROR, HUNG or INCOMPLETE trial (null otherwise)
    error_kind: str | None = None
    hung_last_events: str | None = None
    # The ranking value (psann.contract.RANK_METRIC): the mean val_loss of the trial's last
    # rank_window epochs, as last reported to Tune.
    val_loss_smoothed: float | None = None
    config_id: str | None = None  # psann.contract.config_id of params (repeats share it)
    repeat: int = 0  # the repeat index r (seed = sweep seed + r)
    stopped_by: str | None = None  # "budget": the stage's budget stopped it at a report


@dataclass(frozen=True)
class StageResult:
    stage: str
    max_epochs: int | None
    trials: tuple[TrialOutcome, ...]
    passed: bool
    required_fraction: float
    ran_on_cpu: bool = False
    skipped_reason: str | None = None
    status: str = STAGE_COMPLETED  # or BUDGET_STOPPED
    budget: dict[str, Any] | None = None  # limits, spend, exhausted_by, not_launched (budget.json)

    @property
    def budget_stopped(self) -> bool:
        return self.status == BUDGET_STOPPED

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.trials if t.outcome == outcome)

    @property
    def success_fraction(self) -> float:
        return sum(1 for t in self.trials if t.outcome in PASSING_OUTCOMES) / len(self.trials) if self.trials else 0.0

    def best(self) -> TrialOutcome | None:
        """The stage's best trial by the one ranking rule (``psann.contract.best_trial``).

        With repeats: the best-ranked run of the best configuration.
        """
        configs = self.configurations()
        if configs and max(c["runs"] for c in configs) > 1:
            return best_trial(configs[0]["trials"], status_key="outcome")
        return best_trial(self.trials, status_key="outcome")

    def ranked(self) -> list[TrialOutcome]:
        """Ranked trials, best first (finished and pruned; others left out)."""
        return rank_trials(self.trials, status_key="outcome")

    def configurations(self) -> list[dict[str, Any]]:
        """Configurations ranked by the mean ranking value of their runs (``rank_configurations``)."""
        return rank_configurations(self.trials, status_key="outcome")

    def to_evaluate(self, top_k: int) -> list[TrialOutcome]:
        """The trials evaluated on the test split: every ranked run of the top_k configurations,
        best configuration first (one run per configuration without repeats)."""
        chosen: list[TrialOutcome] = []
        for entry in self.configurations()[:top_k]:
            chosen.extend(rank_trials(entry["trials"], status_key="outcome"))
        return chosen

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "max_epochs": self.max_epochs,
            "passed": self.passed,
            "required_fraction": self.required_fraction,
            "ran_on_cpu": self.ran_on_cpu,
            "status": self.status,
            "budget": self.budget,
            "trials": [asdict(t) for t in self.trials],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "StageResult":
        return cls(
            stage=data["stage"],
            max_epochs=data.get("max_epochs"),
            trials=tuple(TrialOutcome(**t) for t in data["trials"]),
            passed=bool(data["passed"]),
            required_fraction=float(data["required_fraction"]),
            ran_on_cpu=bool(data.get("ran_on_cpu", False)),
            status=data.get("status") or STAGE_COMPLETED,
            budget=data.get("budget"),
        )


def gpu_capacity() -> tuple[float, float]:
    """(GPUs in the cluster now, GPUs the autoscaler's node types could add at most)."""
    present = float(ray.cluster_resources().get("GPU", 0.0))
    try:
        from ray._private.state import state as _state  # Ray 2.60: autoscaler config in the GCS

        limits = _state.get_max_resources_from_cluster_config() or {}
    except Exception:  # no autoscaler, or an older GCS: nothing can be added
        limits = {}
    return present, float(limits.get("GPU", 0) or 0)


def _needs_cpu_fallback(stage: StageSpec, allow_cpu: bool) -> bool:
    """True when a GPU stage must run on CPU; GPUUnavailableError when it may not."""
    if not stage.wants_gpu:
        return False
    present, addable = gpu_capacity()
    if present > 0 or addable > 0:
        return False
    if not (allow_cpu or stage.allow_cpu):
        raise GPUUnavailableError(
            f"stage {stage.name!r} asks for {stage.gpu:g} GPU per trial, but the cluster has no GPU and "
            "no autoscaler node type that adds one. Join a GPU cluster with --address, or pass "
            "--allow-cpu to run this stage on CPU."
        )
    return True


def _trial_dirname(trial) -> str:
    return trial.trial_id


def _outcome(result, hung_trials: dict[str, dict[str, Any]], store: SweepStore, stage: str,
             budget_stopped: frozenset[str] = frozenset(), hang_timeout_s: float | None = None) -> TrialOutcome:
    trial_id = _trial_id(result)
    metrics_json = store.read_json(stage, trial_id, "metrics.json") or {}
    reported = result.metrics or {}
    hung = hung_trials.get(trial_id)
    outcome = trial_outcome(metrics_json.get("status"), hung=hung is not None, raised=result.error is not None)
    error = None
    if result.error is not None:
        error = f"{type(result.error).__name__}: {result.error}".strip()[:2000]
    elif hung is not None:
        error = _hung_message(hung, hang_timeout_s)
    val_loss = metrics_json.get("val_loss", reported.get("val_loss"))
    params = {k: v for k, v in (result.config or {}).items()}
    smoothed = reported.get(TUNE_METRIC)
    return TrialOutcome(
        trial_id=trial_id,
        trial_dir=trial_id,
        tune_status="ERROR" if result.error is not None else "TERMINATED",
        outcome=outcome,
        iterations=reported.get("training_iteration"),
        node_id=reported.get("node_id"),
        device=reported.get("device") or metrics_json.get("device"),
        val_loss=finite_or_none(val_loss),
        params=params,
        error=error,
        error_kind=_outcome_error_kind(outcome, metrics_json, result.error),
        hung_last_events=hung["last_events"] if hung else None,
        val_loss_smoothed=finite_or_none(smoothed),
        config_id=config_id(params),
        repeat=int(params.get(REPEAT_KEY, 0) or 0),
        stopped_by="budget" if trial_id in budget_stopped else None,
    )


def _outcome_error_kind(outcome: str, metrics_json: dict[str, Any], error: BaseException | None) -> str | None:
    """The error kind of a trial that did not finish: the hang rule's verdict, else what its run
    recorded in metrics.json, else the kind of the error Tune recorded (a worker that died, Ray's
    memory monitor), else its run status's."""
    if outcome not in UNFINISHED_STATUSES:
        return None  # SUCCESS and PRUNED (a pruned run's metrics.json still says running)
    if outcome == HUNG:
        return ERROR_HUNG
    recorded = metrics_json.get("error_kind")
    if recorded in ERROR_KINDS:
        return recorded
    if error is not None:
        return error_kind(error)
    return error_kind(metrics_json.get("status")) if isinstance(metrics_json.get("status"), str) else None


def _hung_message(hung: dict[str, Any], hang_timeout_s: float | None) -> str:
    """A hung trial's error: the silence that ended it and its last events (the autopsy)."""
    limit = f" (hang_timeout_s {hang_timeout_s:g})" if hang_timeout_s is not None else ""
    return (f"hung: nothing written for {hung.get('silent_seconds')} s{limit}: no result, no events row, no log "
            f"line; stopped by the hang rule. Last events:\n{hung.get('last_events')}")


def _trainable(spec: SweepSpec, stage: StageSpec, cpu_only: bool, board: str | None = None):
    overrides = stage.run_overrides()
    if cpu_only:
        overrides["estimator.params.device"] = "cpu"
    trainable = tune.with_parameters(
        hisso_trial,
        base_config=spec.base_config,
        base_dir=str(spec.base_config_path.parent),
        base_source=str(spec.base_config_path),
        stage_overrides=overrides,
        seed=spec.seed,
        rank_window=spec.rank_window,
        report=stage.report,
        milestones=stage.scheduler.milestones(),
        board=board,
    )
    gpu = 0.0 if cpu_only else stage.gpu
    return tune.with_resources(trainable, {"cpu": stage.cpu, "gpu": gpu})


def _scheduler(stage: StageSpec, spec: SweepSpec, store: SweepStore, board: str | None = None,
               cpu_only: bool = False) -> HangGuard:
    if stage.scheduler.kind == "asha":
        inner = ASHAScheduler(
            # Epochs, not reports: grace_period and max_t mean the same whatever the report cadence.
            time_attr="epoch",
            max_t=stage.scheduler.max_t,
            grace_period=stage.scheduler.grace_period,
            reduction_factor=stage.scheduler.reduction_factor,
        )
    else:
        inner = FIFOScheduler()
    if stage.budget is not None:
        gpus = 0.0 if cpu_only else stage.gpu
        if stage.budget.gpu_hours is not None and gpus == 0:
            logger.warning("stage %s runs on CPU: budget.gpu_hours does not apply (no GPU hours are spent)%s",
                           stage.name, "; wall_minutes does" if stage.budget.wall_minutes is not None else "")
        inner = BudgetGuard(inner, stage.budget, gpus, store=store, stage=stage.name)
    return HangGuard(inner, spec.hang_timeout_s, store=store, stage=stage.name, board=board)


def _search(spec: SweepSpec, stage: StageSpec) -> tuple[Any, dict[str, Any]]:
    """The stage's search algorithm, seeded with the sweep seed, and its param space.

    Random search is Tune's BasicVariantGenerator with ``random_state``: the same sweep file and
    seed sample the same configurations in the same order. With repeats each sampled
    configuration is held constant over a grid of repeat indices (``constant_grid_search``).
    TPE is Ray Tune's OptunaSearch with the seed, wrapped in Tune's Repeater for repeats (which
    reports the mean of a configuration's runs to TPE). Tune applies ``max_concurrent_trials`` to
    a Searcher itself but ignores it for a variant generator passed in, so the generator gets it.
    """
    space = to_param_space(spec.search_space)
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher: Any = OptunaSearch(seed=spec.seed)
        if spec.repeats > 1:
            searcher = Repeater(searcher, repeat=spec.repeats, set_index=True)
        return searcher, space
    if spec.repeats > 1:
        space[REPEAT_KEY] = tune.grid_search(list(range(spec.repeats)))
    generator = BasicVariantGenerator(
        random_state=spec.seed,
        constant_grid_search=spec.repeats > 1,
        max_concurrent=stage.max_concurrent_trials or 0,
    )
    return generator, space


def run_stage(
    spec: SweepSpec,
    stage: StageSpec,
    sweep_dir: Path | str | SweepStore,
    *,
    allow_cpu: bool = False,
    resume: bool = False,
    verbose: int = 1,
) -> StageResult:
    """Run one stage as a Tune experiment (or restore it) and write its stage_status.json."""
    store = _as_store(sweep_dir)
    stage_uri = store.uri_of(stage.name)
    finished = store.read_json(stage.name, STAGE_STATUS) if resume else None
    if finished is not None:
        logger.info("stage %s already finished (%s): not re-run", stage.name, store.uri_of(stage.name, STAGE_STATUS))
        return StageResult.from_json(finished)

    cpu_only = _needs_cpu_fallback(stage, allow_cpu)
    if cpu_only:
        logger.warning("stage %s: no GPU in the cluster; running on CPU as allowed (--allow-cpu)", stage.name)

    board = heartbeat.board_name(store.name, stage.name)
    guard = _scheduler(stage, spec, store, board, cpu_only)
    trainable = _trainable(spec, stage, cpu_only, board)
    search_alg, param_space = _search(spec, stage)
    if resume and tune.Tuner.can_restore(stage_uri):
        logger.info("stage %s: restoring the interrupted Tune experiment at %s", stage.name, stage_uri)
        tuner = tune.Tuner.restore(
            stage_uri,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            param_space=param_space,
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=TUNE_METRIC,
                mode=TUNE_MODE,
                search_alg=search_alg,
                # Tune counts a searcher's trials; the variant generator multiplies samples by grids.
                num_samples=stage.num_samples * (spec.repeats if spec.search == "optuna" else 1),
                scheduler=guard,
                max_concurrent_trials=stage.max_concurrent_trials if spec.search == "optuna" else None,
                trial_dirname_creator=_trial_dirname,
                trial_name_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=stage.name,
                storage_path=store.uri,
                # Tune snapshots the whole experiment state each time a trial has made num_to_keep
                # checkpoints (a round trip through the driver); keeping a few amortises that cost
                # over several epochs while a lost node still costs at most one epoch.
                # The kept checkpoints are the best by the ranking metric (and the latest, which
                # Tune always keeps for restoring): the evaluation loads the best of them.
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=KEEP_CHECKPOINTS,
                    checkpoint_score_attribute=TUNE_METRIC,
                    checkpoint_score_order=TUNE_MODE,
                ),
                failure_config=tune.FailureConfig(max_failures=stage.max_failures),
                sync_config=tune.SyncConfig(sync_artifacts=True),
                verbose=verbose,
            ),
        )
    with heartbeat.open_board(board):
        results = tuner.fit()
    hung_trials = HangGuard.load_record(store, stage.name)
    # Tune returns early on SIGINT: it saves the experiment state, then marks the trials it stops
    # TERMINATED in memory, so the ResultGrid cannot tell an interrupted stage from a finished one.
    # The saved state can: interrupted trials are still RUNNING or PENDING there, and trials not yet
    # generated are missing. Writing stage_status.json now would mark the stage finished and
    # --resume would skip it.
    # A budget-stopped stage ends with fewer trials than planned: the searcher was told to finish.
    spent = store.read_json(stage.name, BUDGET_RECORD) if stage.budget is not None else None
    budget_stopped = isinstance(spent, dict) and spent.get("exhausted_by") is not None
    expected = spec.trial_count(stage)
    saved = tune.ExperimentAnalysis(stage_uri).trials
    ended = sum(1 for t in saved if t.status in ("TERMINATED", "ERROR"))
    if ended < (len(saved) if budget_stopped else max(expected, len(saved))):
        raise StageInterruptedError(stage.name, ended, expected)
    stopped = frozenset(spent.get("stopped_at_report") or ()) if budget_stopped else frozenset()
    unstarted = frozenset(spent.get("not_launched") or ()) if budget_stopped else frozenset()
    # Trials the budget ended before they ever ran have no result and no run files: not trials.
    ran = [r for r in results if not (_trial_id(r) in unstarted and not (r.metrics or {}).get("training_iteration"))]
    for result in results:
        if result not in ran:
            _remove_if_empty(store, stage.name, _trial_id(result))  # Tune made it; nothing ran in it
    outcomes = tuple(sorted((_outcome(r, hung_trials, store, stage.name, stopped, spec.hang_timeout_s) for r in ran),
                            key=lambda t: t.trial_id))
    trials = len(outcomes)
    fraction = sum(1 for t in outcomes if t.outcome in PASSING_OUTCOMES) / trials if trials else 0.0
    result = StageResult(
        stage=stage.name,
        max_epochs=stage.scheduler.max_t or stage.epochs,
        trials=outcomes,
        passed=trials > 0 and fraction + 1e-12 >= stage.min_success_fraction,
        required_fraction=stage.min_success_fraction,
        ran_on_cpu=cpu_only,
        status=BUDGET_STOPPED if budget_stopped else STAGE_COMPLETED,
        budget=None if stage.budget is None else {
            **stage.budget.to_json(),
            "spent_gpu_hours": (spent or {}).get("spent_gpu_hours", 0.0),
            "spent_wall_minutes": (spent or {}).get("spent_wall_minutes", 0.0),
            "exhausted_by": (spent or {}).get("exhausted_by"),
            "not_launched": max(0, expected - trials) if budget_stopped else 0,
        },
    )
    if budget_stopped:
        logger.warning("stage %s: stopped by its budget (%s) after %d of %d trial(s); %d not launched",
                       stage.name, spent.get("exhausted_by"), trials, expected, max(0, expected - trials))
    store.write_json(result.to_json(), stage.name, STAGE_STATUS)
    return result


def _remove_if_empty(store: SweepStore, *parts: str) -> None:
    import pyarrow.fs as pafs

    try:
        if not store.fs.get_file_info(pafs.FileSelector(store.path(*parts), allow_not_found=True)):
            store.fs.delete_dir(store.path(*parts))
    except OSError:  # an empty folder left behind is harmless
        pass


def _trial_id(result) -> str:
    return result.path.rstrip("/").rsplit("/", 1)[-1]


def _as_store(sweep_dir: Path | str | SweepStore) -> SweepStore:
    return sweep_dir if isinstance(sweep_dir, SweepStore) else SweepStore(sweep_dir)


def _ingest(store: SweepStore) -> str | None:
    try:
        from sweeps.results import ingest_sweep
    except ImportError:  # pragma: no cover - the results store ships with sweeps
        return None
    try:
        report = ingest_sweep(store.uri)
    except Exception as exc:  # the sweep's results stay on disk; ingest can be re-run by hand
        logger.error("ingest of %s failed (%s); run `python -m sweeps.results ingest %s`", store, exc, store)
        return None
    return str(report.tables_path)


def run_sweep(
    spec: SweepSpec,
    sweep_dir: Path | str | SweepStore,
    *,
    stages: Sequence[str] | None = None,
    allow_cpu: bool = False,
    resume: bool = False,
    verbose: int = 1,
    gpu_price: GpuPrice | None = None,
) -> list[StageResult]:
    """Run the stages in order; stop at the first stage that fails its pass rule.

    A budget-stopped stage that passes its pass rule over the trials it ran lets the next stage
    start, like any passing stage. Before each GPU stage the spend estimate is logged, with the
    seconds per epoch measured by this sweep's smoke stage when the file gives none (priced with
    ``gpu_price``, from ``--cluster``).
    """
    store = _as_store(sweep_dir)
    chosen = [s for s in spec.stages if stages is None or s.name in stages]
    for stage in chosen:
        if resume and store.exists(stage.name, STAGE_STATUS):
            continue  # finished before the interruption: not run again
        # Refuse a GPU stage that can never start before any earlier stage spends its trials (and
        # before the sweep folder exists, so the same --name works with --allow-cpu); run_stage
        # checks again when the stage's turn comes.
        _needs_cpu_fallback(stage, allow_cpu)
    store.makedirs()
    _record_sweep(spec, store, stages=stages, allow_cpu=allow_cpu)
    results: list[StageResult] = []
    for stage in chosen:
        if stage.wants_gpu:
            _log_estimate(spec, stage, store, gpu_price)
        logger.info("stage %s: starting (%d trial(s))", stage.name, spec.trial_count(stage))
        result = run_stage(spec, stage, store, allow_cpu=allow_cpu, resume=resume, verbose=verbose)
        results.append(result)
        _evaluate(spec, stage, result, store)
        tables = _ingest(store)
        if tables is not None:
            logger.info("results ingested into %s", tables)
        if not result.passed:
            remaining = [s.name for s in chosen[len(results):]]
            logger.error(
                "stage %s failed its pass rule (%d/%d trials passed, needed %.0f%%): %s not started",
                stage.name, sum(1 for t in result.trials if t.outcome in PASSING_OUTCOMES), len(result.trials),
                100 * stage.min_success_fraction, ", ".join(remaining) or "no later stage",
            )
            break
    return results


def _log_estimate(spec: SweepSpec, stage: StageSpec, store: SweepStore, price: GpuPrice | None) -> None:
    """Log the stage's spend estimate, from the smoke stage's measured epoch time if this sweep ran it."""
    smoke = smoke_stage(spec)
    seconds = measure_epoch_seconds(store, smoke.name) if smoke is not None else None
    measured = (seconds, store.uri_of(smoke.name)) if seconds is not None else None
    for line in describe_estimates([estimate_stage(spec, stage, measured)], price, smoke.name if smoke else None)[:1]:
        logger.info("%s", line)


def _evaluate(spec: SweepSpec, stage: StageSpec, result: StageResult, store: SweepStore) -> None:
    """Evaluate the stage's top trials on the test split (evaluation.json beside metrics.json).

    Runs after every stage, also a finished one on --resume: trials that already have an
    evaluation.json keep it, so an interrupted evaluation is completed, never redone.
    """
    chosen = result.to_evaluate(spec.top_k)
    if not chosen:
        return
    from sweeps.evaluate import evaluate_top_trials

    gpu = 0.0 if result.ran_on_cpu else stage.gpu
    ranked = [{"trial_id": t.trial_id, "val_loss_smoothed": t.val_loss_smoothed} for t in chosen]
    logger.info("stage %s: evaluating %d top trial(s) on the test split", stage.name, len(ranked))
    evaluate_top_trials(store, stage.name, ranked, top_k=len(ranked), cpu=stage.cpu, gpu=gpu)


def _record_sweep(spec: SweepSpec, store: SweepStore, *, stages, allow_cpu: bool) -> None:
    now = datetime.now(timezone.utc).isoformat()
    record = store.read_json("sweep.json")
    if isinstance(record, dict):
        record.setdefault("resumed_at", []).append(now)
    else:
        record = {
            "name": store.name,
            "sweep": spec.name,
            "sweep_file": str(spec.path),
            "base_config": str(spec.base_config_path),
            "profile": spec.profile,
            "started_at": now,
            "stages": [s.name for s in spec.stages if stages is None or s.name in stages],
            "allow_cpu": allow_cpu,
            "seed": spec.seed,
            "search": spec.search,
            "repeats": spec.repeats,
            "rank_window": spec.rank_window,
            "top_k": spec.top_k,
            "hang_timeout_s": spec.hang_timeout_s,
            "search_space": spec.search_space,
            "ray_version": ray.__version__,
            "python": sys.version.split()[0],
            # The driver's code version and machine (git facts are the driver's: workers have no checkout).
            "provenance": collect_provenance(),
            "budgets": {s.name: s.budget.to_json() for s in spec.stages if s.budget is not None},
        }
    store.write_json(record, "sweep.json")


def _budget_text(result: StageResult) -> str:
    """One line: the stage was stopped by its budget, by which cap, and what it spent."""
    budget = result.budget or {}
    caps = ", ".join(f"{k} {budget[k]:g}" for k in ("gpu_hours", "wall_minutes") if budget.get(k) is not None)
    stopped = sum(1 for t in result.trials if t.stopped_by == "budget")
    return (f"{BUDGET_STOPPED}: stopped by its budget ({caps}; {budget.get('exhausted_by')} reached) after spending "
            f"{budget.get('spent_gpu_hours') or 0.0:.4g} GPU h and {budget.get('spent_wall_minutes') or 0.0:.3g} wall "
            f"min; {stopped} running trial(s) stopped at a report, {budget.get('not_launched', 0)} not launched")


SUMMARY_FAILED_TRIALS = 10  # failed trials listed per stage in the summary (the rest are counted)


def _first_words(text: str | None, limit: int = 160) -> str:
    """The last non-empty line of an error text (a traceback's exception line), cut to ``limit``."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no message)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure_lines(result: StageResult, limit: int = SUMMARY_FAILED_TRIALS) -> list[str]:
    """One line per trial that did not finish: ``<OUTCOME> <trial_id> [<error_kind>]: <message>``.

    A hung trial's message is its silence (the first line), not its autopsy.
    """
    failed = [t for t in result.trials if t.outcome in UNFINISHED_STATUSES]
    lines = []
    for trial in failed[:limit]:
        text = trial.error
        if trial.outcome == HUNG:
            text = (text or "hung").split(". Last events:")[0]
        lines.append(f"{trial.outcome} {trial.trial_id} [{trial.error_kind or 'unknown'}]: {_first_words(text)}")
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more failed trial(s) (stage_status.json)")
    return lines


def format_summary(results: Sequence[StageResult], tables: Path | str | None = None,
                   store: SweepStore | None = None) -> str:
    """The end-of-sweep table: per stage counts and its best trial by the ranking rule.

    Under a stage's row, one line per trial that did not finish, with its error kind and message.

    With ``store`` the best trial's test figures come from its evaluation.json.
    """
    header = f"{'stage':<10} {'trials':>6} {'success':>7} {'pruned':>6} {'errors':>6} {'hung':>4} {'passed':>6}  best"
    lines = [header, "-" * len(header)]
    for result in results:
        best = result.best()
        best_text = "-"
        if best is not None:
            best_text = f"{best.trial_id} val_loss_smoothed={best.val_loss_smoothed:.5g} ({best.outcome.lower()})"
            evaluation = store.read_json(result.stage, best.trial_dir, EVALUATION_FILE) if store is not None else None
            if isinstance(evaluation, dict):
                test = evaluation.get("test_loss")
                best_text += f" test_loss={test:.5g}" if isinstance(test, (int, float)) else " test_loss=(evaluation failed)"
        lines.append(
            f"{result.stage:<10} {len(result.trials):>6} {result.count(SUCCESS):>7} {result.count(PRUNED):>6} "
            f"{result.count(ERROR) + result.count(INCOMPLETE):>6} {result.count(HUNG):>4} "
            f"{'yes' if result.passed else 'NO':>6}  {best_text}" + ("  (ran on CPU)" if result.ran_on_cpu else "")
        )
        if result.budget_stopped:
            lines.append(f"{'':<10} {_budget_text(result)}")
        lines.extend(f"{'':<10} {line}" for line in _failure_lines(result))
        if best:
            shown = {k: v for k, v in best.params.items() if k != REPEAT_KEY}
            lines.append(f"{'':<10} best config: " + ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items())))
            configs = result.configurations()
            if configs and configs[0]["runs"] > 1:
                top = configs[0]
                lines.append(f"{'':<10} over {top['runs']} runs: val_loss_smoothed {top['value']:.5g} +/- {top['std']:.2g} (std)")
    if tables is not None:
        lines.append(f"Arrow tables: {tables}")
    return "\n".join(lines)
