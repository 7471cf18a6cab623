"""The results store and the ranking rule: val_loss_smoothed, repeats, evaluation and equity.

Synthetic sweep folders (tests/sweeps/_trial_folders.py) that follow docs/run_outputs.md, as the
sweep runner writes them for issue 14: sweep.json's rank_window and search, stage_status.json
entries with the runner's val_loss_smoothed / config_id / repeat, evaluation.json and the equity
CSVs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from psann import contract as C
from sweeps.results import (ingest_sweep, load_equity, load_trials, query, summarize_configs,
                            summary)
from sweeps.results._cli import main

try:
    from ._trial_folders import (TrialSpec, cli_runs, evaluation_for, logged_losses, tune_dir_name,
                                 write_evaluation, write_stage, write_trial)
except ImportError:
    from _trial_folders import (TrialSpec, cli_runs, evaluation_for, logged_losses, tune_dir_name,
                                write_evaluation, write_stage, write_trial)


needs_duckdb = pytest.mark.skipif(importlib.util.find_spec("duckdb") is None,
                                  reason="filters and sorting need DuckDB (the sweeps extra)")


def make_sweep(root, stages: dict[str, list[TrialSpec]], **sweep_json):
    sweep = root / "sw"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "sw", "stages": list(stages), **sweep_json}))
    for name, specs in stages.items():
        write_stage(sweep / name, specs)
    return sweep


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["trial_id"]: row for row in table.to_pylist()}


def mean(values):
    return sum(values) / len(values)


def run_cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


# A trial that peaked early and degraded, one ASHA stopped while it was still improving, one that
# raised on its best epoch, and one that diverged (a non-finite val_loss in its window).
PEAKED = TrialSpec("aaaaa_00000", {"lr": 1e-3}, losses=[0.9, 0.05, 0.6, 0.7, 0.8], outcome="SUCCESS")
PRUNED = TrialSpec("aaaaa_00001", {"lr": 3e-3}, losses=[0.6, 0.4, 0.3], status="running", outcome="PRUNED")
FAILED = TrialSpec("aaaaa_00002", {"lr": 1e-2}, losses=[0.01], status="error", outcome="ERROR")
STEADY = TrialSpec("aaaaa_00003", {"lr": 1e-4}, losses=[0.8, 0.6, 0.5, 0.45, 0.44], outcome="SUCCESS")


@pytest.fixture
def ranked_sweep(tmp_path):
    return make_sweep(tmp_path, {"tuned": [PEAKED, PRUNED, FAILED, STEADY]}, rank_window=3)


# -- val_loss_smoothed ----------------------------------------------------------------------------

def test_val_loss_smoothed_is_the_mean_of_the_last_rank_window_main_phase_epochs(tmp_path):
    warm = TrialSpec("aaaaa_00000", losses=[0.5, 0.4, 0.3, 0.2], warm_start_epochs=3, outcome="SUCCESS")
    short = TrialSpec("aaaaa_00001", losses=[0.7], outcome="PRUNED", status="running")
    sweep = make_sweep(tmp_path, {"tuned": [warm, short]}, rank_window=2)
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    # the warm-start epochs (0.4, 0.39, 0.38) are not main-phase epochs
    assert rows["aaaaa_00000"]["val_loss_smoothed"] == pytest.approx(mean(logged_losses(warm)[-2:]))
    assert rows["aaaaa_00001"]["val_loss_smoothed"] == pytest.approx(0.7)  # fewer epochs than the window
    assert {r["rank_window"] for r in rows.values()} == {2}


def test_without_rank_window_in_sweep_json_the_contract_window_is_used(tmp_path):
    spec = TrialSpec("aaaaa_00000", losses=[0.9, 0.5, 0.4, 0.3, 0.2], outcome="SUCCESS")
    sweep = make_sweep(tmp_path, {"tuned": [spec]})
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["rank_window"] == C.RANK_WINDOW == 3
    assert row["val_loss_smoothed"] == pytest.approx(C.smoothed_loss(logged_losses(spec), 3))


def test_changing_rank_window_in_sweep_json_reingests_every_trial(ranked_sweep):
    ingest_sweep(ranked_sweep)
    record = json.loads((ranked_sweep / "sweep.json").read_text())
    (ranked_sweep / "sweep.json").write_text(json.dumps({**record, "rank_window": 1}))
    report = ingest_sweep(ranked_sweep)
    assert report.trials_updated == 4 and report.trials_unchanged == 0
    rows = by_id(load_trials(ranked_sweep))
    assert rows["aaaaa_00000"]["val_loss_smoothed"] == pytest.approx(0.8)
    assert rows["aaaaa_00000"]["rank_window"] == 1


def test_a_bad_rank_window_is_a_warning_and_the_default(tmp_path):
    sweep = make_sweep(tmp_path, {"tuned": [STEADY]}, rank_window=0)
    report = ingest_sweep(sweep)
    assert any("rank_window must be an int >= 1, got 0" in w for w in report.warnings)
    assert load_trials(sweep)["rank_window"].to_pylist() == [C.RANK_WINDOW]


def test_a_diverged_epoch_in_the_window_leaves_the_trial_unranked(tmp_path):
    spec = TrialSpec("aaaaa_00000", losses=[0.5, 0.4, 0.3], outcome="SUCCESS")
    sweep = make_sweep(tmp_path, {"tuned": [spec]})
    events = next((sweep / "tuned").glob("*aaaaa_00000*")) / "events.csv"
    # events.csv writes a non-finite loss as an empty cell
    events.write_text(events.read_text().replace(",0.400000,", ",,", 1))
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["val_loss_smoothed"] is None and row["status"] == "SUCCESS"


def test_without_a_validation_split_train_loss_is_smoothed_as_the_loop_monitors_it(tmp_path):
    spec = TrialSpec("aaaaa_00000", losses=[0.5, 0.4, 0.3], outcome="SUCCESS")
    sweep = make_sweep(tmp_path, {"tuned": [spec]})
    events = next((sweep / "tuned").glob("*aaaaa_00000*")) / "events.csv"
    lines = events.read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("val_loss")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[column] = ""
    events.write_text("\n".join([lines[0]] + [",".join(r) for r in rows]) + "\n")
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["val_loss_smoothed"] == pytest.approx(mean([v * 0.9 for v in logged_losses(spec)]), rel=1e-5)


def test_a_restored_trial_counts_each_epoch_once_by_its_last_row(tmp_path):
    spec = TrialSpec("aaaaa_00000", losses=[0.9, 0.8, 0.7, 0.6], outcome="SUCCESS")
    sweep = make_sweep(tmp_path, {"tuned": [spec]}, rank_window=3)
    events = next((sweep / "tuned").glob("*aaaaa_00000*")) / "events.csv"
    lines = events.read_text().splitlines()
    epoch_lines = [line for line in lines if ",epoch,hisso," in line]
    # restored after epoch 2: epochs 3 and 4 are logged again, with other values
    again = [line.replace("0.700000", "0.500000").replace("0.600000", "0.400000") for line in epoch_lines[2:]]
    events.write_text("\n".join(lines[:-1] + again + lines[-1:]) + "\n")
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["val_loss_smoothed"] == pytest.approx(mean([0.8, 0.5, 0.4]))


def test_a_restored_trial_drops_the_abandoned_attempts_later_epochs(tmp_path):
    spec = TrialSpec("aaaaa_00000", losses=[0.9, 0.8, 0.7, 0.6], outcome="PRUNED", status="running")
    sweep = make_sweep(tmp_path, {"tuned": [spec]}, rank_window=3)
    events = next((sweep / "tuned").glob("*aaaaa_00000*")) / "events.csv"
    lines = events.read_text().splitlines()
    epoch_lines = [line for line in lines if ",epoch,hisso," in line]
    # restored after epoch 2 and stopped after logging epoch 3 again: epoch 4 was never reached
    again = epoch_lines[2].replace("0.700000", "0.500000")
    events.write_text("\n".join(lines + [again]) + "\n")
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["val_loss_smoothed"] == pytest.approx(mean([0.9, 0.8, 0.5]))


def test_the_runners_val_loss_smoothed_wins_and_a_disagreement_is_noted(tmp_path):
    agree = TrialSpec("aaaaa_00000", losses=[0.5, 0.4, 0.3], outcome="SUCCESS",
                      runner={"val_loss_smoothed": mean([0.5, 0.4, 0.3])})
    differ = TrialSpec("aaaaa_00001", losses=[0.5, 0.4, 0.3], outcome="SUCCESS",
                       runner={"val_loss_smoothed": 0.25})
    diverged = TrialSpec("aaaaa_00002", losses=[0.5, 0.4, 0.3], outcome="SUCCESS",
                         runner={"val_loss_smoothed": math.inf})
    sweep = make_sweep(tmp_path, {"tuned": [agree, differ, diverged]})
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    assert rows["aaaaa_00000"]["val_loss_smoothed"] == mean([0.5, 0.4, 0.3])
    assert rows["aaaaa_00000"]["ingest_notes"] is None
    assert rows["aaaaa_00001"]["val_loss_smoothed"] == 0.25
    assert "stage_status.json val_loss_smoothed 0.25 differs from" in rows["aaaaa_00001"]["ingest_notes"]
    assert rows["aaaaa_00002"]["val_loss_smoothed"] is None  # Tune's inf: a diverged window, unranked


# -- the ranking rule: summary and query --top ------------------------------------------------------

def test_a_pruned_trial_still_improving_ranks_above_a_success_that_peaked_early(ranked_sweep):
    ingest_sweep(ranked_sweep)
    rows = by_id(load_trials(ranked_sweep))
    assert rows["aaaaa_00000"]["best_val_loss"] == pytest.approx(0.05)  # its one good epoch
    assert rows["aaaaa_00000"]["val_loss_smoothed"] == pytest.approx(0.7)
    assert rows["aaaaa_00001"]["val_loss_smoothed"] == pytest.approx(mean([0.6, 0.4, 0.3]))
    [stage] = summary(ranked_sweep).to_pylist()
    assert stage["best_trial_id"] == "aaaaa_00001" and stage["PRUNED"] == 1
    assert stage["best_config_id"] == C.config_id({"lr": 3e-3})
    assert stage["best_val_loss_smoothed"] == rows["aaaaa_00001"]["val_loss_smoothed"]
    assert C.best_trial(rows.values())["trial_id"] == "aaaaa_00001"


@needs_duckdb
def test_top_without_sort_orders_by_the_ranking_rule_unranked_last(ranked_sweep):
    ingest_sweep(ranked_sweep)
    # ranked: pruned 0.433, steady 0.463, peaked 0.7; the ERROR trial (0.01) is not ranked
    assert query(ranked_sweep, top=4)["trial_id"].to_pylist() == [
        "aaaaa_00001", "aaaaa_00003", "aaaaa_00000", "aaaaa_00002"]
    assert query(ranked_sweep, top=2, where="status == 'SUCCESS'")["trial_id"].to_pylist() == [
        "aaaaa_00003", "aaaaa_00000"]
    # an explicit --sort still sorts by what it names
    assert query(ranked_sweep, top=1, sort="val_loss")["trial_id"].to_pylist() == ["aaaaa_00002"]
    code, out, _ = run_cli("query", ranked_sweep, "--top", "2", "--columns", "trial_id", "--format", "csv")
    assert code == 0 and out.splitlines() == ['"trial_id"', '"aaaaa_00001"', '"aaaaa_00003"']


def test_top_ranks_across_stages_with_ties_by_stage_then_trial_id(tmp_path):
    same = [0.5, 0.4, 0.3]
    sweep = make_sweep(tmp_path, {
        "b_stage": [TrialSpec("bbbbb_00000", losses=same, outcome="SUCCESS")],
        "a_stage": [TrialSpec("ccccc_00001", losses=same, outcome="SUCCESS"),
                    TrialSpec("ccccc_00000", losses=same, outcome="PRUNED", status="running")],
    })
    ingest_sweep(sweep)
    assert query(sweep, top=3)["trial_id"].to_pylist() == ["ccccc_00000", "ccccc_00001", "bbbbb_00000"]


def test_the_default_table_output_shows_val_loss_smoothed(ranked_sweep):
    ingest_sweep(ranked_sweep)
    code, out, _ = run_cli("query", ranked_sweep, "--top", "1")
    header = out.splitlines()[0].split()
    assert code == 0 and header[:4] == ["stage", "trial_id", "status", "val_loss_smoothed"]
    assert out.splitlines()[2].split()[1] == "aaaaa_00001"


# -- repeats and configurations -----------------------------------------------------------------

def repeats_sweep(tmp_path):
    specs = []
    for config, (lr, curves) in enumerate([(1e-3, [[0.5, 0.4], [0.6, 0.5], [0.4, 0.3]]),
                                           (3e-3, [[0.3, 0.2], [0.9, 0.8], [0.5, 0.5]])]):
        for repeat, losses in enumerate(curves):
            params = {"estimator.params.lr": lr, C.REPEAT_KEY: repeat}
            specs.append(TrialSpec(f"rrrrr_{3 * config + repeat:05d}", params, losses=losses,
                                   outcome="SUCCESS", seed=repeat))
    specs.append(TrialSpec("rrrrr_00006", {"estimator.params.lr": 1e-1}, losses=[0.1],
                           outcome="ERROR", status="error"))
    return make_sweep(tmp_path, {"tuned": specs}, rank_window=2, repeats=3, search="optuna"), specs


def test_repeats_share_a_config_id_and_are_numbered_from_zero(tmp_path):
    sweep, specs = repeats_sweep(tmp_path)
    ingest_sweep(sweep)
    trials = load_trials(sweep)
    rows = by_id(trials)
    first = [rows[f"rrrrr_{i:05d}"] for i in range(3)]
    second = [rows[f"rrrrr_{i:05d}"] for i in range(3, 6)]
    assert [r["repeat"] for r in first] == [r["repeat"] for r in second] == [0, 1, 2]
    assert len({r["config_id"] for r in first}) == len({r["config_id"] for r in second}) == 1
    assert first[0]["config_id"] != second[0]["config_id"]
    assert first[0]["config_id"] == C.config_id({"estimator.params.lr": 1e-3})
    assert rows["rrrrr_00006"]["repeat"] == 0  # no repeat index: the only run of its configuration
    # the repeat index is its own column, not a parameter
    assert not [n for n in trials.column_names if "trial_index" in n]
    assert trials.schema.field("repeat").type == pa.int64()
    assert {r["search"] for r in rows.values()} == {"optuna"}


def test_summarize_configs_gives_mean_and_std_over_repeats_best_first(tmp_path):
    sweep, _ = repeats_sweep(tmp_path)
    ingest_sweep(sweep)
    configs = summarize_configs(load_trials(sweep)).to_pylist()
    first = [mean([0.5, 0.4]), mean([0.6, 0.5]), mean([0.4, 0.3])]
    second = [mean([0.3, 0.2]), mean([0.9, 0.8]), mean([0.5, 0.5])]
    assert [c["config_id"] for c in configs] == [
        C.config_id({"estimator.params.lr": lr}) for lr in (1e-3, 3e-3, 1e-1)]
    best = configs[0]
    assert best["val_loss_smoothed_mean"] == pytest.approx(mean(first))
    assert best["val_loss_smoothed_std"] == pytest.approx(math.sqrt(mean([(v - mean(first)) ** 2 for v in first])))
    assert (best["runs"], best["trials"], best["best_trial_id"]) == (3, 3, "rrrrr_00002")
    assert best["trial_ids"] == "rrrrr_00000,rrrrr_00001,rrrrr_00002"
    assert best["params_estimator__params__lr"] == 1e-3
    assert configs[1]["val_loss_smoothed_mean"] == pytest.approx(mean(second))
    unranked = configs[2]  # its only run raised: no mean, listed last
    assert (unranked["val_loss_smoothed_mean"], unranked["runs"], unranked["trials"]) == (None, 0, 1)
    ranked = C.rank_configurations(load_trials(sweep).to_pylist())
    assert [r["config_id"] for r in ranked] == [c["config_id"] for c in configs[:2]]


def test_with_repeats_the_summarys_best_is_the_best_run_of_the_best_configuration(tmp_path):
    sweep, _ = repeats_sweep(tmp_path)
    ingest_sweep(sweep)
    rows = load_trials(sweep).to_pylist()
    assert C.best_trial(rows)["trial_id"] == "rrrrr_00003"  # one lucky run of the worse configuration
    [stage] = summary(sweep).to_pylist()
    assert stage["best_trial_id"] == "rrrrr_00002"
    assert stage["best_config_id"] == C.config_id({"estimator.params.lr": 1e-3})
    assert stage["best_val_loss_smoothed"] == pytest.approx(mean([0.4, 0.3]))


@needs_duckdb
def test_query_by_config_filters_sorts_and_prints(tmp_path):
    sweep, _ = repeats_sweep(tmp_path)
    ingest_sweep(sweep)
    table = query(sweep, by_config=True, top=1, columns=["config_id", "runs"])
    assert table.to_pylist() == [{"config_id": C.config_id({"estimator.params.lr": 1e-3}), "runs": 3}]
    # --where filters the trials before they are grouped
    kept = query(sweep, by_config=True, where="repeat < 2")
    assert kept["trials"].to_pylist() == [2, 2, 1]
    assert query(sweep, by_config=True, sort="val_loss_smoothed_std", descending=True)["runs"][0].as_py() == 3
    code, out, _ = run_cli("query", sweep, "--by-config")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["stage", "config_id", "val_loss_smoothed_mean"]
    assert lines[-1] == "(3 rows)"
    code, _, err = run_cli("query", sweep, "--by-config", "--table", "events")
    assert code == 2 and "--by-config" in err


def test_plain_run_folders_have_no_config_id_and_no_search(tmp_path):
    root = cli_runs(tmp_path / "runs", ["wave_seed1", "wave_seed2"])
    ingest_sweep(root)
    rows = load_trials(root).to_pylist()
    assert [(r["config_id"], r["repeat"], r["search"]) for r in rows] == [(None, 0, None)] * 2
    assert all(r["val_loss_smoothed"] is not None for r in rows)
    assert [c["trials"] for c in summarize_configs(load_trials(root)).to_pylist()] == [1, 1]


def test_the_runners_config_id_and_repeat_win_and_a_disagreement_is_noted(tmp_path):
    params = {"estimator.params.lr": 1e-3, C.REPEAT_KEY: 1}
    same = TrialSpec("aaaaa_00000", params, outcome="SUCCESS",
                     runner={"config_id": C.config_id(params), "repeat": 1})
    other = TrialSpec("aaaaa_00001", params, outcome="SUCCESS", runner={"config_id": "feedc0ffee", "repeat": 2})
    sweep = make_sweep(tmp_path, {"tuned": [same, other]})
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    assert (rows["aaaaa_00000"]["config_id"], rows["aaaaa_00000"]["repeat"]) == (C.config_id(params), 1)
    assert rows["aaaaa_00000"]["ingest_notes"] is None
    assert (rows["aaaaa_00001"]["config_id"], rows["aaaaa_00001"]["repeat"]) == ("feedc0ffee", 2)
    assert "config_id 'feedc0ffee' differs" in rows["aaaaa_00001"]["ingest_notes"]
    assert "repeat 2 differs from 1" in rows["aaaaa_00001"]["ingest_notes"]


def test_search_defaults_to_random_when_sweep_json_does_not_say(ranked_sweep):
    ingest_sweep(ranked_sweep)
    assert set(load_trials(ranked_sweep)["search"].to_pylist()) == {"random"}


# -- the test evaluation ----------------------------------------------------------------------------

def evaluated_sweep(tmp_path):
    best = TrialSpec("eeeee_00000", losses=[0.5, 0.4, 0.3], outcome="SUCCESS", equity_splits=("test",))
    best.evaluation = evaluation_for(best, stage="tuned", rank=1, smoothed=mean([0.5, 0.4, 0.3]))
    other = TrialSpec("eeeee_00001", losses=[0.6, 0.5, 0.4], outcome="SUCCESS", equity_splits=("test", "val"))
    return make_sweep(tmp_path, {"tuned": [best, other]}), best


def test_evaluation_json_becomes_typed_eval_columns_null_without_one(tmp_path):
    sweep, best = evaluated_sweep(tmp_path)
    ingest_sweep(sweep)
    trials = load_trials(sweep)
    rows = by_id(trials)
    row, evaluation = rows["eeeee_00000"], best.evaluation
    assert row["eval_rank"] == 1 and row["eval_test_loss"] == evaluation["test_loss"]
    assert row["eval_val_loss_smoothed"] == pytest.approx(row["val_loss_smoothed"])
    assert row["eval_checkpoint"] == "checkpoint_000002" and row["eval_checkpoint_epoch"] == 3
    assert row["eval_data_split"] == "test" and row["eval_split"] == "test"  # eval_split: metrics.json's
    assert row["eval_portfolio_policy_log_return"] == evaluation["portfolio"]["policy"]["log_return"]
    assert row["eval_portfolio_best_buy_and_hold_asset"] == 2
    assert row["eval_evaluated_at"] == datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
    assert row["eval_equity_file"] == "evaluation_equity_test.csv" and row["ingest_notes"] is None
    assert trials.schema.field("eval_evaluated_at").type == pa.timestamp("us", tz="UTC")
    assert trials.schema.field("eval_rank").type == pa.int64()
    assert trials.schema.field("eval_portfolio_policy_sharpe").type == pa.float64()
    assert "eval_stage" not in trials.column_names and "eval_trial_id" not in trials.column_names
    from sweeps.results._schema import EVALUATION_COLUMNS

    assert all(rows["eeeee_00001"][name] is None for name, _ in EVALUATION_COLUMNS)
    assert rows["eeeee_00001"]["eval_split"] == "test"  # metrics.json's, not the evaluation's


def test_a_failed_evaluation_keeps_its_error_and_null_figures(tmp_path):
    spec = TrialSpec("eeeee_00000", outcome="SUCCESS")
    spec.evaluation = evaluation_for(spec, stage="tuned", error="RuntimeError: checkpoint unreadable")
    sweep = make_sweep(tmp_path, {"tuned": [spec]})
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    assert row["eval_error"] == "RuntimeError: checkpoint unreadable" and row["eval_test_loss"] is None
    assert row["status"] == "SUCCESS" and row["error"] is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [('{"rank": 1, "test_loss": 0.', "evaluation.json is not valid JSON"),
     ("", "evaluation.json is empty"),
     ("[1]", "evaluation.json is not a JSON object")],
)
def test_a_malformed_evaluation_json_is_noted_and_not_fatal(tmp_path, content, reason):
    sweep, _ = evaluated_sweep(tmp_path)
    (next((sweep / "tuned").glob("*eeeee_00000*")) / "evaluation.json").write_text(content)
    report = ingest_sweep(sweep)
    assert report.incomplete == 0
    row = by_id(load_trials(sweep))["eeeee_00000"]
    assert row["status"] == "SUCCESS" and row["error"] is None
    assert reason in row["ingest_notes"] and row["eval_test_loss"] is None
    assert row["val_loss_smoothed"] == pytest.approx(mean([0.5, 0.4, 0.3]))


def test_mistyped_or_missing_evaluation_keys_are_noted(tmp_path):
    spec = TrialSpec("eeeee_00000", outcome="SUCCESS")
    evaluation = evaluation_for(spec, stage="tuned", rank="first", trial_id="zzzzz_00000")
    del evaluation["node_id"]
    spec.evaluation = evaluation
    sweep = make_sweep(tmp_path, {"tuned": [spec]})
    ingest_sweep(sweep)
    [row] = load_trials(sweep).to_pylist()
    notes = row["ingest_notes"]
    assert row["eval_rank"] is None and "evaluation.json rank: expected int64" in notes
    assert "evaluation.json lacks node_id" in notes
    assert "names trial_id 'zzzzz_00000', not this trial's 'eeeee_00000'" in notes
    assert row["eval_test_loss"] == evaluation["test_loss"]


def test_a_new_evaluation_json_reingests_the_trial(tmp_path):
    sweep, best = evaluated_sweep(tmp_path)
    ingest_sweep(sweep)
    other = TrialSpec("eeeee_00001", losses=[0.6, 0.5, 0.4])
    folder = next((sweep / "tuned").glob("*eeeee_00001*"))
    write_evaluation(folder, evaluation_for(other, stage="tuned", rank=2, smoothed=0.5))
    report = ingest_sweep(sweep)
    assert (report.trials_updated, report.trials_unchanged) == (1, 1)
    assert report.equity_added == 8  # the evaluation's curve
    row = by_id(load_trials(sweep))["eeeee_00001"]
    assert row["eval_rank"] == 2 and row["eval_test_loss"] is not None
    # a rewritten evaluation.json is read again too
    evaluation = json.loads((folder / "evaluation.json").read_text())
    (folder / "evaluation.json").write_text(json.dumps({**evaluation, "test_loss": 123.0, "rank": 3}))
    assert ingest_sweep(sweep).trials_updated == 1
    assert by_id(load_trials(sweep))["eeeee_00001"]["eval_test_loss"] == 123.0


# -- the equity table -------------------------------------------------------------------------------

def test_equity_csvs_become_rows_of_the_equity_table(tmp_path):
    sweep, _ = evaluated_sweep(tmp_path)
    report = ingest_sweep(sweep)
    assert report.equity_added == 10 + 8 + 10 + 10
    assert (sweep / "tables" / "equity" / "stage=tuned").is_dir()
    equity = load_equity(sweep)
    assert equity.column_names == ["sweep", "stage", "trial_id", "source", "split", *C.EQUITY_COLUMNS]
    assert equity.schema.field("step").type == pa.int64()
    assert all(equity.schema.field(c).type == pa.float64() for c in C.EQUITY_COLUMNS[1:])
    counts = {}
    for row in equity.to_pylist():
        key = (row["trial_id"], row["source"], row["split"])
        counts[key] = counts.get(key, 0) + 1
    assert counts == {("eeeee_00000", "evaluation", "test"): 8, ("eeeee_00000", "run", "test"): 10,
                      ("eeeee_00001", "run", "test"): 10, ("eeeee_00001", "run", "val"): 10}
    folder = next((sweep / "tuned").glob("*eeeee_00000*"))
    curve = [r for r in equity.to_pylist() if (r["trial_id"], r["source"]) == ("eeeee_00000", "evaluation")]
    first = (folder / "evaluation_equity_test.csv").read_text().splitlines()[1].split(",")
    assert [r["step"] for r in curve] == list(range(8))
    assert (curve[0]["policy"], curve[0]["best_buy_and_hold"]) == (float(first[1]), float(first[3]))
    assert set(equity["sweep"].to_pylist()) == {"sw"} and set(equity["stage"].to_pylist()) == {"tuned"}


def test_equity_rows_follow_their_trial_folder(tmp_path):
    sweep, _ = evaluated_sweep(tmp_path)
    ingest_sweep(sweep)
    folder = next((sweep / "tuned").glob("*eeeee_00001*"))
    (folder / "equity_val.csv").unlink()
    report = ingest_sweep(sweep)
    assert report.trials_updated == 1 and report.equity_added == -10
    assert ("eeeee_00001", "val") not in {(r["trial_id"], r["split"]) for r in load_equity(sweep).to_pylist()}
    assert ingest_sweep(sweep).equity_added == 0


def test_a_bad_equity_value_is_null_with_a_note_and_the_others_kept(tmp_path):
    sweep, _ = evaluated_sweep(tmp_path)
    folder = next((sweep / "tuned").glob("*eeeee_00001*"))
    (folder / "equity_val.csv").write_text("step,policy,equal_weight,best_buy_and_hold\nzero,1,1,1\n")
    (folder / "equity_test.csv").write_text("step,policy\n0,1.01\n1,1.02\n")
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["eeeee_00001"]
    assert "equity_val.csv column 'step': row 1 not int64 ('zero'); null" in row["ingest_notes"]
    assert "equity_test.csv lacks column(s) equal_weight, best_buy_and_hold" in row["ingest_notes"]
    rows = [r for r in load_equity(sweep).to_pylist() if r["trial_id"] == "eeeee_00001"]
    assert [(r["split"], r["step"], r["policy"], r["equal_weight"]) for r in rows] == [
        ("test", 0, 1.01, None), ("test", 1, 1.02, None), ("val", None, 1.0, 1.0)]


@needs_duckdb
def test_equity_is_queryable_and_in_sql(tmp_path):
    from sweeps.results import sql

    sweep, _ = evaluated_sweep(tmp_path)
    ingest_sweep(sweep)
    last = query(sweep, table="equity", where="source == 'evaluation'", sort="step", descending=True, top=1)
    assert last["step"].to_pylist() == [7]
    [(n,)] = [tuple(r.values()) for r in sql(sweep, "SELECT count(*) AS n FROM equity e JOIN trials t "
                                                    "USING (stage, trial_id) WHERE t.eval_rank = 1").to_pylist()]
    assert n == 10 + 8


def test_reingesting_an_unchanged_folder_keeps_the_equity_rows(tmp_path):
    sweep, _ = evaluated_sweep(tmp_path)
    ingest_sweep(sweep)
    fresh = load_trials(sweep), load_equity(sweep)
    report = ingest_sweep(sweep)
    assert report.stages_written == () and report.equity_added == 0
    assert load_trials(sweep).equals(fresh[0]) and load_equity(sweep).equals(fresh[1])


def test_every_new_column_is_typed_even_when_no_trial_has_a_value(tmp_path):
    root = cli_runs(tmp_path / "runs", ["wave_seed1"])
    ingest_sweep(root)
    from sweeps.results._schema import EVALUATION_COLUMNS, TRIAL_RANK_COLUMNS

    trials = load_trials(root)
    for name, type_ in TRIAL_RANK_COLUMNS + EVALUATION_COLUMNS:
        assert trials.schema.field(name).type == type_, name
    assert load_equity(root).num_rows == 0
    assert load_equity(root).column_names[:5] == ["sweep", "stage", "trial_id", "source", "split"]


def test_a_stage_without_tune_files_or_stage_status_still_gets_the_new_columns(tmp_path):
    stage = tmp_path / "sw" / "hisso"
    spec = TrialSpec("ccccc_00000", {"lr": 1e-3, C.REPEAT_KEY: 4}, losses=[0.3, 0.2])
    write_trial(stage / tune_dir_name(spec, 0), spec)
    ingest_sweep(tmp_path / "sw")
    [row] = load_trials(tmp_path / "sw").to_pylist()
    assert (row["status"], row["repeat"], row["config_id"]) == ("SUCCESS", 4, C.config_id({"lr": 1e-3}))
    assert row["search"] is None and row["val_loss_smoothed"] == pytest.approx(0.25)


# -- docs/results.md --------------------------------------------------------------------------------

def _documented_columns(section: str) -> set[str]:
    """Column names in the first cell of each row of the markdown tables in ``section``,
    with ``{a,b}`` alternatives expanded."""
    import itertools
    import re

    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cell = line.split("|")[1]
        for part in re.split(r",\s*(?![^{]*\})", cell.strip()):
            pieces = re.split(r"\{([^}]*)\}", part.strip())
            choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(pieces)]
            names.update("".join(combo) for combo in itertools.product(*choices))
    return names


def test_docs_results_md_names_every_column_of_every_table():
    from pathlib import Path

    from sweeps.results._schema import KNOWN_EQUITY_TYPES, KNOWN_EVENT_TYPES, KNOWN_TRIAL_TYPES

    text = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    trials = _documented_columns(text.split("## The `trials` table", 1)[1].split("\n## ", 1)[0])
    equity = _documented_columns(text.split("## The `equity` table", 1)[1].split("\n## ", 1)[0])
    assert sorted(set(KNOWN_TRIAL_TYPES) - trials) == []
    assert sorted(set(KNOWN_EQUITY_TYPES) - equity) == []
    events = _documented_columns(text.split("## The `events` table", 1)[1].split("\n## ", 1)[0])
    assert sorted(set(KNOWN_EVENT_TYPES) - events) == []
