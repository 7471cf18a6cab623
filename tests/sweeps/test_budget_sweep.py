"""Stage budgets on a real local Ray: past the budget no trial is launched, running ones stop at a
report, the stage is recorded BUDGET_STOPPED, the next stage still runs, and --resume skips it."""

from __future__ import annotations

import json

import pytest
from ray.tune.schedulers import TrialScheduler

from _sweep_helpers import stage, stage_status, trial_dirs, write_sweep
from psann.contract import BUDGET_STOPPED, PASSING_OUTCOMES
from psann.provenance import PROVENANCE_KEYS
from sweeps.spec import load_sweep

pytestmark = pytest.mark.slow

EPOCHS = 60  # 0.2 s per reward call: a trial would run for tens of seconds without its budget
SLOW = {"hisso.reward": "_sweep_helpers:slow_reward"}


@pytest.fixture(scope="module")
def fake_gpu_ray(worker_pythonpath):
    """An embedded local Ray declaring 2 GPUs (trials are granted them and compute on CPU)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_tiny_budgets_stop_launching_and_record_budget_stopped(fake_gpu_ray, tmp_path):
    from sweeps.stages import format_summary, run_sweep

    path = write_sweep(
        tmp_path,
        [
            # CPU stage: a wall-clock cap, one trial at a time.
            stage("smoke", num_samples=4, epochs=EPOCHS, max_concurrent_trials=1, overrides=SLOW,
                  budget={"wall_minutes": 0.5}),
            # GPU stage: 3.6 GPU-seconds, two (fake) GPUs.
            stage("hisso", num_samples=5, epochs=EPOCHS, resources={"cpu": 1, "gpu": 1}, overrides=SLOW,
                  max_concurrent_trials=2, budget={"gpu_hours": 0.001}, pass_rule={"min_success_fraction": 0.5}),
        ],
        search_space={"estimator.params.lr": {"choice": [0.003, 0.01]}},
    )
    sweep_dir = tmp_path / "out" / "b"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    # The budget-stopped smoke stage passed over the trials it ran, so the GPU stage started.
    assert [r.stage for r in results] == ["smoke", "hisso"]
    for result, planned, cap in ((results[0], 4, "wall_minutes"), (results[1], 5, "gpu_hours")):
        status = stage_status(sweep_dir, result.stage)
        assert status["status"] == BUDGET_STOPPED, status
        budget = status["budget"]
        assert budget["exhausted_by"] == cap
        assert budget[f"spent_{cap}"] >= budget[cap]
        ran = status["trials"]
        assert 1 <= len(ran) < planned, ran
        assert budget["not_launched"] == planned - len(ran)
        assert len(trial_dirs(sweep_dir, result.stage)) == len(ran)  # unlaunched trials leave no folder
        for trial in ran:
            # Stopped at a report: an epoch end, with its results kept and ranked like a pruned trial.
            assert trial["stopped_by"] == "budget" and trial["outcome"] in PASSING_OUTCOMES, trial
            assert 1 <= trial["iterations"] < EPOCHS
        assert status["passed"] is True
    assert results[1].budget["spent_wall_minutes"] > 0
    assert json.loads((sweep_dir / "hisso" / "budget.json").read_text())["gpus_per_trial"] == 1.0

    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["budgets"] == {"smoke": {"gpu_hours": None, "wall_minutes": 0.5},
                                 "hisso": {"gpu_hours": 0.001, "wall_minutes": None}}
    assert sorted(record["provenance"]) == sorted(PROVENANCE_KEYS)

    summary = format_summary(results)
    assert summary.count(f"{BUDGET_STOPPED}: stopped by its budget") == 2
    assert "gpu_hours 0.001; gpu_hours reached" in summary

    # --resume: a budget-stopped stage is finished; nothing is launched again.
    before = {r.stage: len(trial_dirs(sweep_dir, r.stage)) for r in results}
    again = run_sweep(load_sweep(path), sweep_dir, resume=True, verbose=0)
    assert [r.status for r in again] == [BUDGET_STOPPED, BUDGET_STOPPED]
    assert {r.stage: len(trial_dirs(sweep_dir, r.stage)) for r in again} == before


# --- the guard on its own: a stand-in controller, no cluster -------------------------------------


class _Trial:
    def __init__(self, trial_id: str, status: str) -> None:
        self.trial_id, self.status = trial_id, status


class _Searcher:
    finished = False

    def set_finished(self) -> None:
        self.finished = True


class Inner(TrialScheduler):
    """The stage's own scheduler: its choices show when the guard defers to it."""

    def choose_trial_to_run(self, tune_controller):
        return "inner's choice"

    def on_trial_result(self, tune_controller, trial, result):
        return TrialScheduler.CONTINUE


class _Controller:
    """The scheduler-facing part of Tune's controller that BudgetGuard uses."""

    def __init__(self, trials) -> None:
        self.trials, self.search_alg, self.stopped = list(trials), _Searcher(), []

    def get_live_trials(self):
        return [t for t in self.trials if t.status in ("PENDING", "RUNNING", "PAUSED")]

    def stop_trial(self, trial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"


def test_guard_stops_launches_then_running_trials_and_a_restored_guard_continues(tmp_path, monkeypatch):
    import pickle

    import sweeps.budget_guard as budget_guard
    from sweeps.budget import BudgetSpec
    from sweeps.storage import SweepStore

    clock = {"now": 100.0}
    monkeypatch.setattr(budget_guard.time, "monotonic", lambda: clock["now"])
    store = SweepStore(tmp_path)
    guard = budget_guard.BudgetGuard(Inner(), BudgetSpec(gpu_hours=3 / 3600), 0.5, store=store, stage="s")
    running, waiting = _Trial("s_0", "RUNNING"), _Trial("s_1", "PENDING")
    controller = _Controller([running, waiting])

    assert guard.choose_trial_to_run(controller) == "inner's choice"
    clock["now"] = 105.0  # 5 s x 0.5 GPU = 2.5 GPU-seconds of 3
    assert guard.choose_trial_to_run(controller) == "inner's choice"
    assert guard.on_trial_result(controller, running, {"epoch": 1}) == TrialScheduler.CONTINUE
    clock["now"] = 106.0  # 3 GPU-seconds: spent
    assert guard.choose_trial_to_run(controller) is None
    assert controller.search_alg.finished and controller.stopped == ["s_1"]  # never launched
    assert running.status == "RUNNING"  # not cut mid-epoch ...
    assert guard.on_trial_result(controller, running, {"epoch": 2}) == TrialScheduler.STOP  # ... but at its report
    record = json.loads((tmp_path / "s" / "budget.json").read_text())
    assert record["exhausted_by"] == "gpu_hours" and record["spent_gpu_hours"] == pytest.approx(3 / 3600)
    assert (record["not_launched"], record["stopped_at_report"]) == (["s_1"], ["s_0"])

    # A new driver (--resume of an interrupted stage): the pickled guard starts from budget.json.
    restored = pickle.loads(pickle.dumps(guard))
    retry = _Trial("s_0", "PENDING")  # the stopped trial, pending again after the restore
    controller = _Controller([retry, _Trial("s_2", "PENDING")])
    clock["now"] = 5000.0
    assert restored.choose_trial_to_run(controller) is None
    assert controller.stopped == ["s_0", "s_2"] and controller.search_alg.finished
    record = json.loads((tmp_path / "s" / "budget.json").read_text())
    assert record["spent_gpu_hours"] == pytest.approx(3 / 3600)  # nothing ran in the new driver
    assert record["not_launched"] == ["s_1", "s_2"] and record["stopped_at_report"] == ["s_0"]
