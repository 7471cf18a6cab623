"""What a sweep stage produced: one TrialOutcome per trial, the StageResult, and the summary table.

A TrialOutcome is read from Tune's result for the trial, the run's metrics.json and the hang
record; a StageResult is the stage's stage_status.json (``to_json`` / ``from_json``), and
``format_summary`` prints the end-of-sweep table of them. Ray is not imported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from psann.contract import (
    BUDGET_STOPPED,
    ERROR,
    ERROR_HUNG,
    ERROR_KINDS,
    EVALUATION_FILE,
    HUNG,
    INCOMPLETE,
    PASSING_OUTCOMES,
    PRUNED,
    REPEAT_KEY,
    SUCCESS,
    TUNE_METRIC,
    UNFINISHED_STATUSES,
    best_trial,
    config_id,
    error_kind,
    finite_or_none,
    rank_configurations,
    rank_trials,
    trial_outcome,
)

if TYPE_CHECKING:
    from sweeps.storage import SweepStore

__all__ = ["STAGE_COMPLETED", "StageResult", "TrialOutcome", "format_summary"]

STAGE_COMPLETED = "COMPLETED"  # stage_status.json "status": every trial ran (else psann.contract.BUDGET_STOPPED)


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


def _trial_id(result) -> str:
    return result.path.rstrip("/").rsplit("/", 1)[-1]


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
