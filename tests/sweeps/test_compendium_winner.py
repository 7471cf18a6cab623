"""The compendium's "What won and why": the winner by the contract's ranking, repeats, test figures,
learning curves of the top runs, the winner's equity and parameter importance.

The tables are written here directly with pyarrow, in the layout sweeps.results uses
(<sweep>/tables/{trials,events,equity}/stage=<stage>/part-0.parquet), so these tests depend on
the table columns only, not on ingest.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psann.contract import (
    PRUNED,
    RANK_METRIC,
    REPEAT_KEY,
    SUCCESS,
    best_trial,
    config_id,
    rank_configurations,
    rank_trials,
    smoothed_loss,
)
from sweeps.compendium import build_compendium
from sweeps.compendium._importance import average_ranks, parameter_kind, spearman

START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TYPES = {"first_event_at": pa.timestamp("us", tz="UTC"), "eval_error": pa.string(),
         "eval_checkpoint": pa.string(), "eval_portfolio_split": pa.string(), "search": pa.string(),
         "config_id": pa.string(), "error": pa.string()}


# --------------------------------------------------------------------------- fabricated tables


def _schema(rows: list[dict[str, Any]]) -> pa.Schema:
    names = sorted({k for r in rows for k in r})
    fields = []
    for name in names:
        sample = next((r[name] for r in rows if r.get(name) is not None), None)
        if name in TYPES:
            type_ = TYPES[name]
        elif isinstance(sample, bool):
            type_ = pa.bool_()
        elif isinstance(sample, int):
            type_ = pa.int64()
        elif isinstance(sample, str):
            type_ = pa.string()
        else:
            type_ = pa.float64()
        fields.append((name, type_))
    return pa.schema(fields)


def write_tables(sweep: Path, **tables: list[dict[str, Any]]) -> None:
    """Write each table's rows, one partition per stage (the stage column is the partition)."""
    for name, rows in tables.items():
        for stage in sorted({r["stage"] for r in rows}):
            mine = [{k: v for k, v in r.items() if k != "stage"} for r in rows if r["stage"] == stage]
            folder = sweep / "tables" / name / f"stage={stage}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(mine, schema=_schema(mine)), folder / "part-0.parquet")


def trial_row(sweep: str, stage: str, trial_id: str, status: str, losses: list[float],
              params: dict[str, Any], *, repeat: int = 0, search: str | None = "optuna",
              rank_metric: bool = True) -> dict[str, Any]:
    best = min(range(len(losses)), key=losses.__getitem__)
    row = {"sweep": sweep, "stage": stage, "trial_id": trial_id, "trial_dir": f"t_{trial_id}",
           "status": status, "main_phase": "hisso", "val_loss": losses[best], "best_val_loss": losses[best],
           "best_val_loss_epoch": best + 1, "last_epoch": len(losses), "test_loss": losses[best] * 1.1,
           "eval_split": "test", "reward_mean": -losses[-1], "portfolio_policy_turnover": 0.1,
           "device": "cpu", "duration_seconds": 2.0, "first_event_at": START + timedelta(seconds=len(trial_id)),
           "config_id": config_id(params), "repeat": repeat, "rank_window": 3,
           "error": "Traceback\nRuntimeError: boom" if status == "ERROR" else None}
    if search is not None:
        row["search"] = search
    if rank_metric:
        row[RANK_METRIC] = smoothed_loss(losses, 3) if status in (SUCCESS, PRUNED) else None
    for key, value in params.items():
        row["params_" + key.replace(".", "__")] = value
    return row


def event_rows(trial: dict[str, Any], losses: list[float]) -> list[dict[str, Any]]:
    rows = [{"sweep": trial["sweep"], "stage": trial["stage"], "trial_id": trial["trial_id"], "seq": 0,
             "event": "run_start", "phase": None, "epoch": None, "val_loss": None}]
    rows += [{"sweep": trial["sweep"], "stage": trial["stage"], "trial_id": trial["trial_id"], "seq": i + 1,
              "event": "epoch", "phase": "hisso", "epoch": i + 1, "val_loss": v} for i, v in enumerate(losses)]
    return rows


def add_evaluation(row: dict[str, Any], rank: int, *, error: str | None = None) -> None:
    base = row[RANK_METRIC]
    row.update({"eval_rank": rank, "eval_checkpoint": None if error else f"checkpoint_00000{rank}",
                "eval_checkpoint_epoch": None if error else 2, "eval_val_loss_smoothed": base,
                "eval_test_loss": None if error else round(base * 1.2, 6), "eval_test_mse": None,
                "eval_test_reward_full": None if error else -round(base * 1.3, 6),
                "eval_portfolio_split": None if error else "test",
                "eval_portfolio_policy_log_return": None if error else round(0.1 / rank, 6),
                "eval_portfolio_policy_sharpe": None if error else 0.5,
                "eval_portfolio_equal_weight_log_return": None if error else 0.02,
                "eval_portfolio_best_buy_and_hold_log_return": None if error else 0.04,
                "eval_equity_file": None if error else "evaluation_equity_test.csv", "eval_error": error})


def equity_rows(trial: dict[str, Any], source: str, steps: int = 30, drift: float = 0.004) -> list[dict[str, Any]]:
    rows = []
    for step in range(steps):
        rows.append({"sweep": trial["sweep"], "stage": trial["stage"], "trial_id": trial["trial_id"],
                     "source": source, "split": "test", "step": step,
                     "policy": math.exp(drift * (step + 1)), "equal_weight": math.exp(0.001 * (step + 1)),
                     "best_buy_and_hold": math.exp(0.002 * (step + 1) + 0.01 * math.sin(step))})
    return rows


# Per-epoch val_loss.  c_pruned (stopped after 3 epochs) has the lowest smoothed value; a_early has
# the lowest single epoch (its first) and then degrades, so a min-over-epochs rule would pick it.
LOSSES = {
    "a_early": [0.05, 0.6, 0.7, 0.8, 0.9],
    "b_steady": [0.5, 0.3, 0.25, 0.22, 0.21],
    "c_pruned": [0.3, 0.2, 0.15],
    "d_slow": [0.9, 0.8, 0.7, 0.6, 0.5],
    "e_error": [0.4],
    "f_flat": [0.45, 0.44, 0.43, 0.42, 0.41],
}
STATUSES = {"a_early": SUCCESS, "b_steady": SUCCESS, "c_pruned": PRUNED, "d_slow": SUCCESS,
            "e_error": "ERROR", "f_flat": SUCCESS}
PARAMS = {
    "a_early": {"estimator.params.lr": 3e-2, "hisso.window": 8, "estimator.params.activation": "relu"},
    "b_steady": {"estimator.params.lr": 1e-3, "hisso.window": 16, "estimator.params.activation": "sine"},
    "c_pruned": {"estimator.params.lr": 3e-4, "hisso.window": 32, "estimator.params.activation": "sine"},
    "d_slow": {"estimator.params.lr": 1e-4, "hisso.window": 8, "estimator.params.activation": "relu"},
    "e_error": {"estimator.params.lr": 1e-1, "hisso.window": 16, "estimator.params.activation": "relu"},
    "f_flat": {"estimator.params.lr": 3e-3, "hisso.window": 64, "estimator.params.activation": "sine"},
}


def fabricated_sweep(root: Path, *, evaluations: bool = True, equity: str | None = "evaluation",
                     rank_metric: bool = True, search: str | None = "optuna") -> tuple[Path, list[dict]]:
    """One stage `hisso` of six runs; returns the sweep folder and the trials rows written."""
    sweep = root / "fab"
    trials = []
    for trial_id, losses in LOSSES.items():
        params = {**PARAMS[trial_id], "hisso.reward": "portfolio"}  # a constant parameter
        trials.append(trial_row("fab", "hisso", trial_id, STATUSES[trial_id], losses, params,
                                search=search, rank_metric=rank_metric))
    if evaluations:
        ranked = sorted((t for t in trials if t.get(RANK_METRIC) is not None), key=lambda t: t[RANK_METRIC])
        for rank, row in enumerate(ranked[:3], start=1):
            add_evaluation(row, rank)
    events = [e for t in trials for e in event_rows(t, LOSSES[t["trial_id"]])]
    tables: dict[str, list[dict]] = {"trials": trials, "events": events}
    if equity is not None:
        winner = next(t for t in trials if t["trial_id"] == "c_pruned")
        rows = equity_rows(winner, "run", drift=-0.002)
        if equity == "evaluation":
            rows += equity_rows(winner, "evaluation", drift=0.004)
        tables["equity"] = rows
    write_tables(sweep, **tables)
    return sweep, trials


def repeated_sweep(root: Path) -> tuple[Path, list[dict]]:
    """Three configurations x three repeats; the single best run is not in the best configuration."""
    sweep = root / "rep"
    finals = {  # last-3-epoch levels per (configuration, repeat)
        "lr=0.001": [0.30, 0.31, 0.32],
        "lr=0.01": [0.10, 0.60, 0.65],  # the best single run, the worst mean
        "lr=0.0001": [0.40, 0.41, 0.39],
    }
    trials, events = [], []
    for c, (name, levels) in enumerate(finals.items()):
        lr = float(name.split("=")[1])
        for r, level in enumerate(levels):
            losses = [level + 0.3, level + 0.01, level, level - 0.01]
            params = {"estimator.params.lr": lr, REPEAT_KEY: r}
            row = trial_row("rep", "hisso", f"t{c}{r}", SUCCESS, losses, params, repeat=r, search="random")
            trials.append(row)
            events += event_rows(row, losses)
    for rank, row in enumerate(sorted(trials, key=lambda t: t[RANK_METRIC])[:3], start=1):
        add_evaluation(row, rank)
    write_tables(sweep, trials=trials, events=events)
    return sweep, trials


def section(page: str, stage: str = "hisso") -> str:
    start = page.index("## What won and why")
    end = page.index("## Stages")
    body = page[start:end]
    return body[body.index(f"### {stage}"):]


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG_SIGNATURE and len(data) > 5_000


# --------------------------------------------------------------------------- the winner


def test_the_winner_is_the_contracts_best_trial_and_a_pruned_run_can_win(tmp_path):
    sweep, trials = fabricated_sweep(tmp_path)
    expected = best_trial(trials)
    assert expected["trial_id"] == "c_pruned" and expected["status"] == PRUNED
    build_compendium(sweep, tmp_path / "docs")
    page = (tmp_path / "docs" / "fab.md").read_text()
    won = section(page)
    assert f"**Winner: `{expected['trial_id']}`** (PRUNED), {RANK_METRIC} 0.2167" in won
    assert '"best_trial": "hisso/c_pruned"' in page.splitlines()[0]
    assert "| hisso | 6 | 4 | 1 | 1 | 0 | 0 | 0 | 0 | c_pruned | 0.2167 |" in page
    # The min-over-epochs figure stays visible: a_early's single best epoch does not make it win.
    assert "its best single epoch had val_loss 0.15 at epoch 3" in won
    assert "| 1 | c_pruned | PRUNED | 0.2167 | 0.15 | 3 |" in won
    # The runs table lists every run in ranking order, unranked runs last.
    runs = page[page.index("## Runs"):]
    order = [line.split(" | ")[1] for line in runs.splitlines() if re.match(r"^\| (\d+|–) \| ", line)]
    assert order == [t["trial_id"] for t in rank_trials(trials)] + ["e_error"]
    assert order == ["c_pruned", "b_steady", "f_flat", "d_slow", "a_early", "e_error"]
    assert "Search algorithm: `optuna` (Optuna's TPE sampler through Ray Tune's OptunaSearch)." in won
    assert f"Its configuration `{config_id({**PARAMS['c_pruned'], 'hisso.reward': 'portfolio'})}`" in won


def test_the_winners_test_figures_come_from_its_evaluation(tmp_path):
    sweep, trials = fabricated_sweep(tmp_path)
    build_compendium(sweep, tmp_path / "docs")
    won = section((tmp_path / "docs" / "fab.md").read_text())
    assert "Test figures on the `test` split" in won
    assert ("| run | checkpoint | epoch | test_loss | test_reward_full | policy log return | policy Sharpe "
            "| equal weight log return | best buy-and-hold log return |") in won
    assert "| c_pruned | checkpoint_000001 | 2 | 0.26 | -0.2817 | 0.1 | 0.5 | 0.02 | 0.04 |" in won
    assert "no test figures" not in won.lower()
    # Said in words, not left to the signs of the numbers.
    assert ("**On test the policy BEAT equal weight (log return +0.1000 vs +0.0200, margin +0.0800); "
            "it also beat the best buy-and-hold asset (+0.0400).**") in won


def test_missing_evaluation_columns_say_there_are_no_test_figures(tmp_path):
    sweep, _ = fabricated_sweep(tmp_path, evaluations=False, equity=None)
    build_compendium(sweep, tmp_path / "docs")
    won = section((tmp_path / "docs" / "fab.md").read_text())
    assert "No test figures: these tables have no evaluation columns" in won
    # The run's own end-of-training figure is offered, labelled as such.
    assert "The run itself reported test_loss 0.165 on its `test` split" in won
    assert "No equity curve for `c_pruned` in the tables" in won
    assert not (tmp_path / "docs" / "fab" / "winner_equity_hisso.png").exists()


def test_a_failed_evaluation_is_named_instead_of_test_figures(tmp_path):
    sweep, trials = fabricated_sweep(tmp_path, evaluations=False, equity=None)
    rows = [dict(t) for t in trials]
    winner = next(t for t in rows if t["trial_id"] == "c_pruned")
    add_evaluation(winner, 1, error="Traceback\nFileNotFoundError: checkpoint_000002 is gone")
    for other in rows:
        if other is not winner and other.get(RANK_METRIC) is not None:
            add_evaluation(other, 2)
    shutil.rmtree(sweep / "tables" / "trials")
    write_tables(sweep, trials=rows)
    build_compendium(sweep, tmp_path / "docs")
    won = section((tmp_path / "docs" / "fab.md").read_text())
    assert ("No test figures: `c_pruned` has no test evaluation in the tables (the evaluation failed). "
            "The evaluation of `c_pruned` failed: FileNotFoundError: checkpoint_000002 is gone") in won


def test_repeats_rank_configurations_by_their_mean_and_show_the_spread(tmp_path):
    sweep, trials = repeated_sweep(tmp_path)
    configs = rank_configurations(trials)
    top = configs[0]
    assert best_trial(trials)["config_id"] != top["config_id"]  # the best single run loses on its mean
    build_compendium(sweep, tmp_path / "docs")
    page = (tmp_path / "docs" / "rep.md").read_text()
    won = section(page)
    spread = f"{top['value']:.4g} ± {top['std']:.4g}"
    assert f"**Winner: configuration `{top['config_id']}`**, {RANK_METRIC} {spread} (mean ± std over 3 runs of 3)" in won
    for rank, config in enumerate(configs, start=1):
        assert f"| {rank} | {config['config_id']} | {config['value']:.4g} ± {config['std']:.4g} | 3/3 |" in won
    # Test figures of every evaluated run of the winning configuration, with their mean ± std.
    evaluated = sorted(t["trial_id"] for t in top["trials"] if t.get("eval_test_loss") is not None)
    assert evaluated == ["t00", "t01"]
    figures = won[won.index("Test figures"):]
    assert "| t00 | checkpoint_000002 |" in figures and "| t01 | checkpoint_000003 |" in figures
    assert "| mean ± std | – | – | 0.366 ± 0.006 |" in figures
    # The trials table keeps one row per run, with its configuration and repeat index.
    runs = page[page.index("## Runs"):]
    assert "| config rank | trial | status | configuration | repeat |" in runs
    for t in trials:
        assert sum(f"| {t['trial_id']} | SUCCESS | {t['config_id']} | {t['repeat']} |" in line
                   for line in runs.splitlines()) == 1
    assert "| best configuration | best trial | best val_loss_smoothed (mean ± std) |" in page
    # The repeat index is not a parameter: no importance entry, no run-table column for it.
    assert REPEAT_KEY not in page


def test_repeats_mean_and_std_match_the_runs(tmp_path):
    sweep, trials = repeated_sweep(tmp_path)
    build_compendium(sweep, tmp_path / "docs")
    won = section((tmp_path / "docs" / "rep.md").read_text())
    for config in rank_configurations(trials):
        values = [t[RANK_METRIC] for t in config["trials"]]
        assert config["value"] == pytest.approx(statistics.fmean(values))
        assert config["std"] == pytest.approx(statistics.pstdev(values))
        assert f"{statistics.fmean(values):.4g} ± {statistics.pstdev(values):.4g}" in won


# --------------------------------------------------------------------------- plots and importance


def test_top_trials_equity_and_importance_plots_are_written(tmp_path):
    sweep, _ = fabricated_sweep(tmp_path)
    out = tmp_path / "docs"
    written = {p.relative_to(out).as_posix() for p in build_compendium(sweep, out)}
    for name in ("top_trials_hisso.png", "winner_equity_hisso.png", "parameter_importance_hisso.png",
                 "learning_curves_hisso.png"):
        assert f"fab/{name}" in written and png_ok(out / "fab" / name)
    won = section((out / "fab.md").read_text())
    assert "![top 5 runs of stage hisso: val_loss and its rolling mean per epoch](fab/top_trials_hisso.png)" in won
    assert "Equity of `c_pruned` on the `test` split, from its test evaluation" in won
    assert "![equity of c_pruned](fab/winner_equity_hisso.png)" in won


def test_the_equity_plot_falls_back_to_the_runs_own_curve(tmp_path):
    sweep, _ = fabricated_sweep(tmp_path, equity="run")
    out = tmp_path / "docs"
    build_compendium(sweep, out)
    won = section((out / "fab.md").read_text())
    assert "Equity of `c_pruned` on the `test` split, from the run's own equity file" in won
    assert png_ok(out / "fab" / "winner_equity_hisso.png")


def test_the_importance_table_lists_each_swept_parameter_with_its_rank_correlation(tmp_path):
    sweep, trials = fabricated_sweep(tmp_path)
    build_compendium(sweep, tmp_path / "docs")
    won = section((tmp_path / "docs" / "fab.md").read_text())
    table = won[won.index("| parameter | kind |"):]
    table = table[: table.index("\n\n")]
    ranked = [t for t in trials if t.get(RANK_METRIC) is not None]
    y = [t[RANK_METRIC] for t in ranked]
    rho_lr = spearman([t["params_estimator__params__lr"] for t in ranked], y)
    rho_window = spearman([t["params_hisso__window"] for t in ranked], y)
    assert abs(rho_window) > abs(rho_lr)
    lines = table.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == [
        "hisso.window", "estimator.params.lr", "estimator.params.activation"]  # |rho| order, categorical last
    assert f"| estimator.params.lr | log | 6 | 5 | {round(rho_lr, 3)} | 0.0003 |" in table
    assert f"| hisso.window | linear | 4 | 5 | {round(rho_window, 3)} | 32 |" in table
    assert "| estimator.params.activation | categorical | 2 | 5 | – | sine |" in table
    assert "hisso.reward" not in table  # constant: not swept


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    x = [1e-4, 3e-4, 1e-3, 1e-3, 3e-3, 1e-2, 1e-2, 1e-2]
    y = [0.5, 0.4, 0.41, 0.3, 0.35, 0.2, 0.6, 0.2]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert list(average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    assert parameter_kind([1e-4, 1e-2]) == "log" and parameter_kind([8, 16, 32]) == "linear"
    assert parameter_kind(["relu", "sine"]) == "categorical" and parameter_kind([True, False]) == "categorical"


# --------------------------------------------------------------------------- older tables, determinism


def test_tables_without_the_new_columns_are_ranked_from_the_events(tmp_path):
    sweep, trials = fabricated_sweep(tmp_path, evaluations=False, equity=None, rank_metric=False, search=None)
    build_compendium(sweep, tmp_path / "docs")
    page = (tmp_path / "docs" / "fab.md").read_text()
    assert f"These tables have no {RANK_METRIC} column" in page
    assert "**Winner: `c_pruned`** (PRUNED), val_loss_smoothed 0.2167" in page
    assert "Search algorithm: not recorded (these tables predate the `search` column)." in page


def test_rebuilding_from_the_same_tables_gives_identical_files(tmp_path):
    sweep, _ = fabricated_sweep(tmp_path)
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build_compendium(sweep, tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in build_compendium(sweep, tmp_path / "b")}
    assert first == second and len([p for p in first if p.suffix == ".png"]) == 5
    repeated, _ = repeated_sweep(tmp_path)
    first = {p.relative_to(tmp_path / "c"): p.read_bytes() for p in build_compendium(repeated, tmp_path / "c")}
    second = {p.relative_to(tmp_path / "d"): p.read_bytes() for p in build_compendium(repeated, tmp_path / "d")}
    assert first == second


def test_the_index_names_the_best_by_the_ranking_rule(tmp_path):
    sweep, _ = fabricated_sweep(tmp_path)
    build_compendium(sweep, tmp_path / "docs")
    index = (tmp_path / "docs" / "index.md").read_text()
    assert "| sweep | trials | stages | best val_loss_smoothed | best trial |" in index
    assert "| [fab](fab.md) | 6 | hisso | 0.2167 | hisso/c_pruned |" in index


def test_rebuilding_in_fresh_interpreters_with_other_hash_seeds_gives_identical_files(tmp_path):
    import os
    import subprocess
    import sys

    sweep, _ = fabricated_sweep(tmp_path)
    code = "import sys; from sweeps.compendium import build_compendium; build_compendium(sys.argv[1], sys.argv[2])"
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}"
        subprocess.run([sys.executable, "-c", code, str(sweep), str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1] and len(outputs[0]) == 7


def test_a_stage_with_no_ranked_run_says_nothing_won(tmp_path):
    sweep = tmp_path / "failed"
    trials = [trial_row("failed", "gpu", f"x{i}", "ERROR", [0.5], {"estimator.params.lr": 10.0 ** -i})
              for i in range(2)]
    write_tables(sweep, trials=trials, events=[e for t in trials for e in event_rows(t, [0.5])])
    written = build_compendium(sweep, tmp_path / "docs")
    page = (tmp_path / "docs" / "failed.md").read_text()
    assert "No run of this stage is ranked (none finished or was pruned with a finite val_loss), so nothing won." in page
    assert '"best_trial": null' in page.splitlines()[0]
    assert not any(p.name.startswith(("top_trials", "winner_equity", "parameter_importance")) for p in written)
