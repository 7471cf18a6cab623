"""Trial faults in one stage on a real local Ray: an exception, a NaN loss, a simulated out-of-memory
error and a hang, one trial each, beside a healthy trial. Each is recorded with its outcome and its
``error_kind`` beside its message, the healthy trial finishes, and the stage's pass rule holds.

The faults are reward functions of _sweep_helpers (FAULT_REWARDS), one per trial through a grid on
``hisso.reward``; each fails in epoch 2, after the trial reported epoch 1. Nothing depends on timing
except the hang, which is stopped by the sweep's hang rule.
"""

from __future__ import annotations

import json

import pytest

from _sweep_helpers import FAULT_REWARDS, stage, stage_status, write_sweep
from psann.contract import ERROR_KINDS, HUNG, SUCCESS, UNFINISHED_STATUSES
from sweeps.spec import load_sweep
from sweeps.stages import format_summary, run_sweep

# Above the silent stretch of a healthy first fit in a fresh worker (see test_hang.py).
HANG_TIMEOUT_S = 10


@pytest.mark.slow  # five Ray trials, one of them waiting out the hang timeout
def test_each_fault_is_recorded_with_its_kind_the_healthy_trial_succeeds_and_the_pass_rule_holds(
        local_ray, tmp_path):
    path = write_sweep(
        tmp_path,
        [stage("faults", epochs=3, max_concurrent_trials=2, pass_rule={"min_success_fraction": 0.2})],
        search_space={"hisso.reward": {"grid": list(FAULT_REWARDS)}},
        hang_timeout_s=HANG_TIMEOUT_S,
    )
    sweep_dir = tmp_path / "out" / "faults"
    (result,) = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    status = stage_status(sweep_dir, "faults")
    by_reward = {t["params"]["hisso.reward"]: t for t in status["trials"]}
    assert set(by_reward) == set(FAULT_REWARDS)
    for reward, (outcome, kind) in FAULT_REWARDS.items():
        trial = by_reward[reward]
        assert (trial["outcome"], trial["error_kind"]) == (outcome, kind), (reward, trial["error"])
        metrics = json.loads((sweep_dir / "faults" / trial["trial_dir"] / "metrics.json").read_text())
        if outcome == SUCCESS:
            assert trial["error"] is None and trial["iterations"] == 3
            assert metrics["status"] == "success" and metrics["error_kind"] is None
        elif outcome == HUNG:
            # Stopped by the sweep: Tune saw no error; the run's last snapshot still says running.
            assert trial["tune_status"] == "TERMINATED"
            assert trial["error"].startswith("hung: nothing written for") and "hang_timeout_s 10" in trial["error"]
            assert trial["hung_last_events"] and "event=epoch" in trial["hung_last_events"]
            assert metrics["status"] == "running" and metrics["error_kind"] is None
        else:
            assert trial["tune_status"] == "ERROR"
            assert f"({kind})" in trial["error"]  # the message Tune recorded names the kind too
            assert metrics["status"] == "error" and metrics["error_kind"] == kind
            assert metrics["epochs_run"] == 1  # each fault came in epoch 2
    assert by_reward["_sweep_helpers:nan_reward"]["error"].count("FloatingPointError") >= 1
    assert "OutOfMemoryError" in by_reward["_sweep_helpers:oom_reward"]["error"]
    assert "simulated bug in a reward function" in by_reward["_sweep_helpers:raising_reward"]["error"]

    # The pass rule: 1 of 5 trials passed, and 0.2 was asked for.
    assert status["required_fraction"] == 0.2 and status["passed"] is True
    assert result.passed and result.success_fraction == pytest.approx(0.2)
    failed_kinds = {t.error_kind for t in result.trials if t.outcome in UNFINISHED_STATUSES}
    assert failed_kinds == set(ERROR_KINDS) - {"interrupted"}

    # The summary lists each failed trial with its kind.
    summary = format_summary([result])
    for reward, (outcome, kind) in FAULT_REWARDS.items():
        if outcome != SUCCESS:
            line = next(line for line in summary.splitlines() if by_reward[reward]["trial_id"] in line)
            assert f"{outcome} {by_reward[reward]['trial_id']} [{kind}]: " in line, summary
