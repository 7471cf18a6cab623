"""Ordered sweep stages: gating and Tuner wiring (outcomes and the summary: sweeps.outcomes).

Each stage is its own Tune experiment under the sweep folder (``<sweep>/<stage>/``). A stage runs to
completion before the next starts; a stage that fails its pass rule stops the sweep, so no GPU trial
is ever scheduled after a failed smoke stage. A GPU stage starts only when the cluster has GPUs or
an autoscaler can add them, or when CPU fallback was allowed (then it runs on CPU, recorded so).
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Repeater

from psann.contract import BUDGET_STOPPED, PASSING_OUTCOMES, REPEAT_KEY, TUNE_METRIC, TUNE_MODE
from psann.provenance import collect_provenance
from sweeps.budget import BUDGET_RECORD, GpuPrice, describe_estimates, estimate_stage, measure_epoch_seconds, smoke_stage
from sweeps.budget_guard import BudgetGuard
from sweeps.outcomes import STAGE_COMPLETED, StageResult, TrialOutcome, _outcome, _trial_id, format_summary
from sweeps.spec import StageSpec, SweepSpec, to_param_space
from sweeps.storage import SweepStore
from sweeps import heartbeat
from sweeps.trainable import hisso_trial
from sweeps.watchdog import HangGuard

__all__ = ["StageResult", "TrialOutcome", "GPUUnavailableError", "StageInterruptedError", "run_stage", "run_sweep", "format_summary", "gpu_capacity"]

logger = logging.getLogger(__name__)

STAGE_STATUS = "stage_status.json"
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
