"""The results store agrees with the sweep runner on a real sweep: the same val_loss_smoothed,
config_id and repeat for every trial, and the test evaluation of the top configuration in the
eval_* columns and the equity table."""

from __future__ import annotations

import json

import pytest

from _sweep_helpers import stage, write_sweep
from psann import contract as C
from sweeps.results import load_equity, load_events, load_trials, summarize_configs, summary
from sweeps.spec import load_sweep

pytestmark = pytest.mark.slow  # about 90 s of Ray trials on 2 cores

RANK_WINDOW = 2


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, local_ray):
    from sweeps.stages import run_sweep

    folder = tmp_path_factory.mktemp("agreement")
    sweep_file = write_sweep(
        folder,
        [stage("tuned", num_samples=2, epochs=4,
               scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2})],
        repeats=2, rank_window=RANK_WINDOW, top_k=1,
    )
    sweep_dir = folder / "out" / "real"
    results = run_sweep(load_sweep(sweep_file), sweep_dir, verbose=0)
    entries = json.loads((sweep_dir / "tuned" / "stage_status.json").read_text())["trials"]
    if not any(C.RANK_METRIC in entry for entry in entries):
        pytest.skip("the sweep runner does not write val_loss_smoothed to stage_status.json yet")
    return sweep_dir, results, {entry["trial_id"]: entry for entry in entries}


def test_val_loss_smoothed_agrees_with_the_runner_and_with_events(real_sweep):
    sweep_dir, _, entries = real_sweep
    trials = load_trials(sweep_dir)
    assert trials.num_rows == len(entries) == 4
    events = load_events(sweep_dir).to_pylist()
    for row in trials.to_pylist():
        entry = entries[row["trial_id"]]
        assert row["rank_window"] == RANK_WINDOW and row["search"] == "random"
        assert row["val_loss_smoothed"] == entry[C.RANK_METRIC]
        # Recomputed from events.csv over the epochs the runner saw reported (one per epoch here):
        # the store's rule is the trainable's.
        losses = [e["val_loss"] for e in events
                  if e["trial_id"] == row["trial_id"] and e["event"] == "epoch"
                  and e["phase"] in C.MAIN_PHASES and e["epoch"] <= entry["iterations"]]
        assert C.smoothed_loss(losses, RANK_WINDOW) == pytest.approx(entry[C.RANK_METRIC], rel=1e-12)
        notes = row["ingest_notes"] or ""
        assert "config_id" not in notes and "repeat" not in notes and "evaluation.json" not in notes, notes
        if row["status"] != C.PRUNED:  # a pruned trial may log an epoch after its last report
            assert C.RANK_METRIC not in notes, notes


def test_repeats_and_the_best_trial_agree_with_the_runner(real_sweep):
    sweep_dir, results, entries = real_sweep
    rows = load_trials(sweep_dir).to_pylist()
    for row in rows:
        assert (row["config_id"], row["repeat"]) == (entries[row["trial_id"]]["config_id"],
                                                      entries[row["trial_id"]]["repeat"])
    by_config: dict[str, list[int]] = {}
    for row in rows:
        by_config.setdefault(row["config_id"], []).append(row["repeat"])
    assert sorted(sorted(r) for r in by_config.values()) == [[0, 1], [0, 1]]
    [stage_row] = summary(sweep_dir).to_pylist()
    assert stage_row["best_trial_id"] == results[0].best().trial_id  # one rule, repeats included
    configs = summarize_configs(load_trials(sweep_dir)).to_pylist()
    runner_configs = results[0].configurations()
    assert [c["config_id"] for c in configs[:len(runner_configs)]] == [c["config_id"] for c in runner_configs]


def test_the_evaluated_trials_have_eval_columns_and_equity_rows(real_sweep):
    sweep_dir, _, _ = real_sweep
    rows = load_trials(sweep_dir).to_pylist()
    evaluated = [r for r in rows if r["eval_rank"] is not None]
    assert evaluated, "top_k 1 evaluates the best configuration's runs"
    for row in evaluated:
        assert row["eval_error"] is None, row["eval_error"]
        assert row["eval_val_loss_smoothed"] == pytest.approx(row["val_loss_smoothed"])
        assert row["eval_data_split"] == "test" and row["eval_test_loss"] is not None
    equity = load_equity(sweep_dir).to_pylist()
    for row in evaluated:
        if row["eval_equity_file"]:
            curve = [e for e in equity if e["trial_id"] == row["trial_id"] and e["source"] == "evaluation"]
            assert curve and [e["step"] for e in curve] == list(range(len(curve)))
