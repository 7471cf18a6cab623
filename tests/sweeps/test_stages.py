"""Stages on a real local Ray: smoke gates the next stage, ASHA prunes, GPU stages need a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _sweep_helpers import epoch_rows, stage, stage_status, trial_dirs, write_sweep
from psann.contract import PRUNED, SUCCESS
from sweeps.spec import load_sweep
from sweeps.stages import GPUUnavailableError, format_summary, run_sweep

RUN_FILES = ("metrics.json", "events.csv", "config_resolved.yaml", "checkpoints/best")
# Half the trials of every stage optimise a reward 1 lower per episode than the other half, so on
# val_loss they are the worst whatever the seed: ASHA must stop some of them at its first rung.
REWARDS = {"hisso.reward": {"grid": ["portfolio", "_sweep_helpers:offset_reward"]},
           "estimator.params.lr": {"choice": [0.003, 0.01]}}


def _assert_run_files(trial_dir: Path) -> None:
    for name in RUN_FILES:
        assert (trial_dir / name).exists(), f"{trial_dir.name} lacks {name}"


def test_smoke_stage_then_asha_stage_prunes_the_worst_trials(local_ray, tmp_path):
    from ray import tune

    path = write_sweep(
        tmp_path,
        [
            stage("smoke", num_samples=2, epochs=2, max_concurrent_trials=2),
            stage("hisso", num_samples=2, epochs=4, max_concurrent_trials=2,
                  scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2},
                  pass_rule={"min_success_fraction": 0.25}),
        ],
        search_space=REWARDS,
    )
    sweep_dir = tmp_path / "out" / "s1"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    assert [r.stage for r in results] == ["smoke", "hisso"]
    smoke = stage_status(sweep_dir, "smoke")
    assert smoke["passed"] is True
    assert len(smoke["trials"]) == 4
    assert {t["outcome"] for t in smoke["trials"]} == {SUCCESS}
    assert all(t["iterations"] == 2 for t in smoke["trials"])
    for trial_dir in trial_dirs(sweep_dir, "smoke"):
        _assert_run_files(trial_dir)
        assert json.loads((trial_dir / "metrics.json").read_text())["status"] == "success"
        assert epoch_rows(trial_dir) == [1, 2]

    hisso = stage_status(sweep_dir, "hisso")
    assert hisso["max_epochs"] == 4 and len(hisso["trials"]) == 4
    pruned = [t for t in hisso["trials"] if t["outcome"] == PRUNED]
    finished = [t for t in hisso["trials"] if t["outcome"] == SUCCESS]
    assert pruned, hisso["trials"]
    assert finished, hisso["trials"]
    assert all(t["iterations"] < 4 for t in pruned)
    assert all(t["iterations"] == 4 for t in finished)
    # Tune's own record agrees: the pruned trials reported fewer than max_t iterations.
    analysis = tune.ExperimentAnalysis(str(sweep_dir / "hisso"))
    tune_iterations = {t.trial_id: t.last_result["training_iteration"] for t in analysis.trials}
    for trial in hisso["trials"]:
        assert tune_iterations[trial["trial_id"]] == trial["iterations"]
    # The best trial (the contract's rule: the lowest mean val_loss over the last 3 epochs, pruned
    # trials included) optimised the true reward.
    best = results[1].best()
    assert best is not None and best.outcome in (SUCCESS, PRUNED)
    assert best.val_loss_smoothed == min(t["val_loss_smoothed"] for t in hisso["trials"])
    assert best.params["hisso.reward"] == "portfolio"
    assert analysis.get_best_trial("val_loss_smoothed", "min", scope="last").trial_id == best.trial_id
    for trial_dir in trial_dirs(sweep_dir, "hisso"):
        _assert_run_files(trial_dir)
    for trial in finished:
        trial_dir = sweep_dir / "hisso" / trial["trial_dir"]
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] == "success" and metrics["epochs_run"] == 4
        assert metrics["test_loss"] is not None  # the final evaluation ran before the last report
        assert epoch_rows(trial_dir) == [1, 2, 3, 4]
    summary = format_summary(results)
    assert "hisso" in summary and "smoke" in summary


def test_failing_smoke_stage_blocks_the_gpu_stage(local_ray, tmp_path):
    # toy_hisso_dataset needs steps >= 6: every smoke run fails when it loads its data, after the
    # sweep file and every trial config were valid.
    path = write_sweep(
        tmp_path,
        [
            stage("smoke", num_samples=2, max_concurrent_trials=2, overrides={"data.kwargs.steps": 3}),
            stage("hisso", resources={"cpu": 1, "gpu": 1}, allow_cpu=True, num_samples=1, epochs=2),
        ],
    )
    sweep_dir = tmp_path / "out" / "s2"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    assert [r.stage for r in results] == ["smoke"]
    assert results[0].passed is False
    smoke = stage_status(sweep_dir, "smoke")
    assert smoke["passed"] is False
    assert [t["outcome"] for t in smoke["trials"]] == ["ERROR", "ERROR"]
    assert all(t["tune_status"] == "ERROR" and "steps" in t["error"] for t in smoke["trials"])
    for trial_dir in trial_dirs(sweep_dir, "smoke"):
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] == "error" and "steps" in metrics["error"]
    assert not (sweep_dir / "hisso").exists()


def test_gpu_stage_without_gpus_is_refused_before_any_stage_runs(local_ray, tmp_path):
    path = write_sweep(
        tmp_path,
        [stage("smoke"), stage("hisso", resources={"cpu": 1, "gpu": 1}, num_samples=1, epochs=2)],
    )
    sweep_dir = tmp_path / "out" / "s3"
    with pytest.raises(GPUUnavailableError, match="--allow-cpu"):
        run_sweep(load_sweep(path), sweep_dir, verbose=0)
    # No smoke trial was spent on a sweep whose GPU stage could never start.
    assert trial_dirs(sweep_dir, "smoke") == []
    assert not (sweep_dir / "hisso").exists()


def test_gpu_stage_runs_on_cpu_with_allow_cpu_and_records_it(local_ray, tmp_path):
    path = write_sweep(tmp_path, [stage("hisso", resources={"cpu": 1, "gpu": 1}, num_samples=1, epochs=2)])
    sweep_dir = tmp_path / "out" / "s4"
    results = run_sweep(load_sweep(path), sweep_dir, allow_cpu=True, verbose=0)

    status = stage_status(sweep_dir, "hisso")
    assert results[0].ran_on_cpu is True and status["ran_on_cpu"] is True
    assert status["passed"] is True
    (trial,) = status["trials"]
    assert trial["outcome"] == "SUCCESS" and trial["device"] == "cpu"
    assert "(ran on CPU)" in format_summary(results)


def test_failed_trial_is_retried_from_its_last_checkpoint(local_ray, tmp_path):
    from ray import tune

    path = write_sweep(
        tmp_path,
        [stage("smoke", num_samples=1, epochs=4, max_failures=1,
               overrides={"hisso.reward": "_sweep_helpers:flaky_reward"})],
        search_space={},
    )
    sweep_dir = tmp_path / "out" / "retry"
    (result,) = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    (trial,) = stage_status(sweep_dir, "smoke")["trials"]
    assert trial["outcome"] == "SUCCESS" and trial["iterations"] == 4
    (analysis_trial,) = tune.ExperimentAnalysis(str(sweep_dir / "smoke")).trials
    assert analysis_trial.num_failures == 1
    trial_dir = sweep_dir / "smoke" / trial["trial_dir"]
    # One event log across both attempts: every epoch once, the crash, then a resumed start.
    assert epoch_rows(trial_dir) == [1, 2, 3, 4]
    events = (trial_dir / "events.csv").read_text()
    assert "simulated crash" in events and "resume=yes" in events
    assert json.loads((trial_dir / "metrics.json").read_text())["status"] == "success"
