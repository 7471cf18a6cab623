"""The test evaluation of a stage's top trials (sweeps.evaluate) on a real tiny stage.

One ASHA stage of 4 WaveResNet trials runs once for the module (about 15 s): half of them optimise a
reward 1 lower per episode, so ASHA prunes at least one. Every epoch is inside the stem's w0
warm-up, so an epoch's network is only reproduced with that epoch's w0.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch
import yaml

from _sweep_helpers import stage, stage_status, write_run_config, write_sweep
from psann.contract import (
    EQUITY_COLUMNS,
    EVALUATION_FILE,
    EVALUATION_KEYS,
    PRUNED,
    RANK_METRIC,
    equity_file,
    rank_trials,
)
from psann.evaluation import context_for
from psann.hisso import call_reward, hisso_infer_series, resolve_reward
from psann.runconfig import parse_run_config
from psann.runs import load_dataset
from sweeps.evaluate import evaluate_top_trials, evaluate_trial, load_checkpoint_weights, pick_checkpoint
from sweeps.spec import load_sweep
from sweeps.stages import run_stage
from sweeps.storage import SweepStore

STAGE = "hisso"
WAVE = {"target": "psann.WaveResNetRegressor",
        "params": {"hidden_units": 8, "depth": 1, "epochs": 4, "first_layer_w0": 3.0, "w0_warmup_epochs": 10,
                   "lr": 0.003, "device": "cpu"}}
SEARCH = {"hisso.reward": {"grid": ["portfolio", "_sweep_helpers:offset_reward"]},
          "estimator.params.lr": {"choice": [0.003, 0.01]}}
EQUITY = equity_file("test", evaluation=True)


# -- pick_checkpoint ------------------------------------------------------------------------------------

def _row(name, epoch, score):
    return {"checkpoint_dir_name": name, "epoch": epoch, RANK_METRIC: score, "training_iteration": epoch}


def test_pick_checkpoint_takes_the_lowest_score_of_the_kept_checkpoints():
    rows = [_row("checkpoint_000000", 1, 0.5), _row("checkpoint_000001", 2, 0.2), _row("checkpoint_000002", 4, 0.3)]
    assert pick_checkpoint(rows) == ("checkpoint_000001", 2, 0.2)
    # Tune deleted the best one (not kept): the best of those left.
    assert pick_checkpoint(rows, ["checkpoint_000000", "checkpoint_000002"]) == ("checkpoint_000002", 4, 0.3)


def test_pick_checkpoint_ties_go_to_the_earliest_and_non_finite_scores_do_not_count():
    rows = [_row("checkpoint_000000", 1, math.inf), _row("checkpoint_000001", 2, 0.2),
            _row("checkpoint_000002", 3, 0.2), _row("checkpoint_000003", 4, None), {"epoch": 5, RANK_METRIC: -9.0}]
    assert pick_checkpoint(rows) == ("checkpoint_000001", 2, 0.2)


def test_pick_checkpoint_without_scores_falls_back_to_the_latest_kept():
    rows = [_row("checkpoint_000000", 1, None), _row("checkpoint_000001", 2, float("nan"))]
    assert pick_checkpoint(rows) == ("checkpoint_000001", 2, None)
    # No result rows at all (result.json lost): the latest folder, epoch unknown.
    assert pick_checkpoint([], ["checkpoint_000003", "checkpoint_000001"]) == ("checkpoint_000003", None, None)
    assert pick_checkpoint([]) is None and pick_checkpoint(rows, []) is None


def test_pick_checkpoint_takes_the_last_row_of_a_checkpoint_reported_twice():
    # A trial restored from a checkpoint reports under the same folder name again.
    rows = [_row("checkpoint_000000", 1, 0.1), _row("checkpoint_000001", 2, 0.4), _row("checkpoint_000000", 1, 0.6)]
    assert pick_checkpoint(rows) == ("checkpoint_000001", 2, 0.4)


# -- a real stage ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep_dir(local_ray, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    path = write_sweep(
        folder,
        [stage(STAGE, num_samples=2, epochs=4, max_concurrent_trials=2,
               scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2},
               pass_rule={"min_success_fraction": 0.25})],
        search_space=SEARCH,
        top_k=0,  # the stage evaluates nothing itself: these tests call evaluate_top_trials
    )
    write_run_config(folder, estimator=WAVE)
    spec = load_sweep(path)
    out = folder / "out"
    run_stage(spec, spec.stages[0], out, verbose=0)
    for leftover in (out / STAGE).glob("*/evaluation*"):  # in case the stage evaluated anyway
        leftover.unlink()
    return out


def _result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def _ranked(sweep_dir: Path) -> list[dict]:
    trials = stage_status(sweep_dir, STAGE)["trials"]
    for trial in trials:
        if trial.get(RANK_METRIC) is None:  # a stage_status.json written before the ranking value
            trial[RANK_METRIC] = _result_rows(sweep_dir / STAGE / trial["trial_dir"])[-1][RANK_METRIC]
    ranked = rank_trials(trials, status_key="outcome")
    assert len(ranked) == 4, trials
    return ranked


def _kept_min(trial_dir: Path) -> dict:
    kept = {p.name for p in trial_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_")}
    rows = [r for r in _result_rows(trial_dir) if r.get("checkpoint_dir_name") in kept]
    return min(rows, key=lambda r: r[RANK_METRIC])


def _config(trial_dir: Path):
    return parse_run_config(yaml.safe_load((trial_dir / "config_resolved.yaml").read_text()))


def _read_equity(path: Path) -> dict:
    table = pacsv.read_csv(path)
    assert tuple(table.column_names) == EQUITY_COLUMNS
    return table.to_pydict()


def test_top_trials_are_evaluated_on_test_from_their_best_checkpoint(sweep_dir):
    store = SweepStore(sweep_dir)
    ranked = _ranked(sweep_dir)
    evaluations = evaluate_top_trials(store, STAGE, ranked, top_k=4, cpu=1, gpu=0)

    assert [e["trial_id"] for e in evaluations] == [t["trial_id"] for t in ranked]
    assert [e["rank"] for e in evaluations] == [1, 2, 3, 4]
    pruned = [t["trial_id"] for t in ranked if t["outcome"] == PRUNED]
    assert pruned, "ASHA pruned no trial; the pruned case is untested"
    for trial, evaluation in zip(ranked, evaluations):
        trial_dir = sweep_dir / STAGE / trial["trial_id"]
        written = json.loads((trial_dir / EVALUATION_FILE).read_text())
        assert list(written) == sorted(EVALUATION_KEYS) and written == evaluation
        assert evaluation["error"] is None, evaluation["error"]
        assert evaluation["stage"] == STAGE and evaluation["split"] == "test"
        assert evaluation["val_loss_smoothed"] == trial[RANK_METRIC]
        assert math.isfinite(evaluation["test_loss"]) and math.isfinite(evaluation["test_reward_full"])
        assert evaluation["device"] == "cpu" and evaluation["node_id"] and evaluation["duration_seconds"] > 0
        # The kept checkpoint with the lowest val_loss_smoothed, by result.json.
        best_row = _kept_min(trial_dir)
        assert evaluation["checkpoint"] == best_row["checkpoint_dir_name"]
        assert evaluation["checkpoint_epoch"] == best_row["epoch"]
        assert evaluation["checkpoint_val_loss_smoothed"] == best_row[RANK_METRIC]
        # The equity curves of that evaluation: one row per test step, ending at its log returns.
        assert evaluation["equity_file"] == EQUITY
        table = _read_equity(trial_dir / EQUITY)
        steps = load_dataset(_config(trial_dir))["X_test"].shape[0]
        assert table["step"] == list(range(steps))
        portfolio = evaluation["portfolio"]
        assert portfolio["split"] == "test"
        for name in EQUITY_COLUMNS[1:]:
            assert math.log(table[name][-1]) == pytest.approx(portfolio[name]["log_return"], rel=1e-9, abs=1e-12)
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        if trial["trial_id"] in pruned:
            # Stopped between epochs: the run never evaluated, the sweep's evaluation did.
            assert metrics["status"] == "running" and metrics["test_loss"] is None
        # (Not compared with metrics.json's test_loss: inside the w0 warm-up the run's final model
        # keeps the next epoch's w0, while the checkpoint is evaluated with the w0 its epoch was
        # validated with; test_each_kept_checkpoint_reproduces_the_val_loss_it_reported.)


def test_a_second_call_reuses_evaluation_json_and_rewrites_nothing(sweep_dir):
    store = SweepStore(sweep_dir)
    ranked = _ranked(sweep_dir)
    first = evaluate_top_trials(store, STAGE, ranked, top_k=2, cpu=1, gpu=0)
    files = [sweep_dir / STAGE / t["trial_id"] / name for t in ranked[:2] for name in (EVALUATION_FILE, EQUITY)]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = evaluate_top_trials(store, STAGE, ranked, top_k=2, cpu=1, gpu=0)
    assert again == first
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    assert evaluate_top_trials(store, STAGE, ranked, top_k=0, cpu=1, gpu=0) == []


def test_each_kept_checkpoint_reproduces_the_val_loss_it_reported(sweep_dir):
    # The validation episodes the trainer scores (hisso.val_episodes windows drawn with
    # hisso.eval_seed): the loaded network must be that epoch's, w0 included.
    checked = 0
    for trial in _ranked(sweep_dir):
        trial_dir = sweep_dir / STAGE / trial["trial_id"]
        resolved = yaml.safe_load((trial_dir / "config_resolved.yaml").read_text())
        options = resolved["hisso"]
        data = load_dataset(_config(trial_dir))
        rows = {r["checkpoint_dir_name"]: r for r in _result_rows(trial_dir)}
        for folder in sorted(trial_dir.glob("checkpoint_*")):
            est = _config(trial_dir).estimator_cls.load(folder / "best", device="cpu")
            assert load_checkpoint_weights(est, folder, "cpu") == rows[folder.name]["epoch"]
            window = options["window"]
            starts = torch.randint(0, data["X_val"].shape[0] - window + 1, (options["val_episodes"],),
                                   generator=torch.Generator().manual_seed(options["eval_seed"]))
            index = starts[:, None] + torch.arange(window)[None, :]
            actions = torch.as_tensor(hisso_infer_series(est, data["X_val"]))[index]
            context = torch.as_tensor(context_for(data, "val"))[index]
            strategy = resolve_reward(est.hisso_.get("reward_spec", est.hisso_["reward"]))
            loss = -float(call_reward(strategy.reward_fn, actions, context, est.hisso_["transition_penalty"]).mean())
            assert loss == pytest.approx(rows[folder.name]["val_loss"], abs=1e-5), (trial["trial_id"], folder.name)
            checked += 1
    assert checked >= 5


def test_a_failed_evaluation_is_written_with_its_error_and_never_raised(sweep_dir, tmp_path, caplog):
    # A copy of the stage, one trial's config broken everywhere it is kept.
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir / STAGE, copy / STAGE, ignore=shutil.ignore_patterns("evaluation*"))
    ranked = _ranked(sweep_dir)
    broken = ranked[0]["trial_id"]
    for path in (copy / STAGE / broken).rglob("config_resolved.yaml"):
        path.write_text("- not\n- a mapping\n")
    missing = {"trial_id": "nosuch_00009", RANK_METRIC: 0.5}
    # A GPU asked for on a cluster without one: evaluated on CPU, not left waiting.
    evaluations = evaluate_top_trials(SweepStore(copy), STAGE, [ranked[0], missing, ranked[1]],
                                      top_k=3, cpu=1, gpu=1)

    failed, lost, fine = evaluations
    assert "not a mapping" in failed["error"] and failed["rank"] == 1 and failed["trial_id"] == broken
    for key in ("test_loss", "test_mse", "test_reward_full", "portfolio", "equity_file"):
        assert failed[key] is None
    assert json.loads((copy / STAGE / broken / EVALUATION_FILE).read_text()) == failed
    assert not (copy / STAGE / broken / EQUITY).exists()
    assert "nosuch_00009" in lost["error"] and not (copy / STAGE / "nosuch_00009").exists()
    assert set(lost) == set(EVALUATION_KEYS)
    assert fine["error"] is None and math.isfinite(fine["test_loss"]) and fine["device"] == "cpu"
    assert any("no GPU" in r.getMessage() for r in caplog.records)


def test_a_remote_store_is_read_through_copies_and_gives_the_same_figures(sweep_dir, tmp_path):
    # A file:// store made to take the object-store path: checkpoints are copied to a temp folder
    # (pyarrow.fs.copy_files) and files are written as whole objects.
    copy = tmp_path / "remote"
    shutil.copytree(sweep_dir / STAGE, copy / STAGE, ignore=shutil.ignore_patterns("evaluation*"))
    trial = _ranked(sweep_dir)[0]
    local, local_equity = evaluate_trial(SweepStore(copy), STAGE, trial["trial_id"], rank=1)
    store = SweepStore(f"file://{copy}")
    store.is_local = False
    remote, remote_equity = evaluate_trial(store, STAGE, trial["trial_id"], rank=1)
    assert remote["error"] is None, remote["error"]
    for key in ("checkpoint", "checkpoint_epoch", "test_loss", "test_mse", "portfolio", "equity_file"):
        assert remote[key] == local[key], key
    assert remote_equity == local_equity
    [written] = evaluate_top_trials(store, STAGE, [trial], top_k=1, cpu=1, gpu=0)
    assert json.loads((copy / STAGE / trial["trial_id"] / EVALUATION_FILE).read_text()) == written
    assert (copy / STAGE / trial["trial_id"] / EQUITY).read_text() == local_equity
    assert np.isfinite(written["test_loss"])
