"""The "What won and why" part of a sweep page, one subsection per stage.

For each stage: the search that ran, the winner by the contract's ranking (its configuration and
run), its test figures from the evaluation columns, the top trials' learning curves (raw and
smoothed), the winner's test equity against the baselines and the parameter-importance view.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from psann.contract import RANK_METRIC, baseline_verdict

from ._importance import (PARAM_PREFIX, REPEAT_COLUMN, ParameterEffect, display_name, parameter_effects,
                          swept_parameters)
from ._markdown import fmt, last_line, mean_std, slug, table
from ._rows import Configuration, Standing, finite, smoothed_curve

TOP_CURVES = 5  # trials in the top-trials learning-curve plot
TOP_TABLE = 10  # rows of the top trials / configurations table
SEARCH_NAMES = {"random": "random search", "optuna": "Optuna's TPE sampler through Ray Tune's OptunaSearch"}
# Any of these columns in the trials table means the tables know about test evaluations.
EVALUATION_MARKERS = ("eval_rank", "eval_checkpoint", "eval_test_loss", "eval_error")
TEST_FIGURES = (  # (column, label), shown when some evaluated run has a value
    ("eval_test_loss", "test_loss"),
    ("eval_test_mse", "test_mse"),
    ("eval_test_reward_full", "test_reward_full"),
    ("eval_portfolio_policy_log_return", "policy log return"),
    ("eval_portfolio_policy_sharpe", "policy Sharpe"),
    ("eval_portfolio_policy_max_drawdown", "policy max drawdown"),
    ("eval_portfolio_policy_turnover", "policy turnover"),
    ("eval_portfolio_equal_weight_log_return", "equal weight log return"),
    ("eval_portfolio_best_buy_and_hold_log_return", "best buy-and-hold log return"),
)
EQUITY_SOURCES = ("evaluation", "run")  # the evaluation's curve is preferred to the run's own


def has_evaluations(columns: Sequence[str]) -> bool:
    return any(c in columns for c in EVALUATION_MARKERS)


def evaluated(row: dict[str, Any]) -> bool:
    return row.get("eval_checkpoint") is not None or any(finite(row.get(c)) for c, _ in TEST_FIGURES)


def stage_section(stage: str, rows: list[dict[str, Any]], standing: Standing, *, window: int,
                  series: dict[tuple[str, str], list[tuple[int, float]]], equity: pa.Table | None,
                  evaluations: bool, assets: Path, out: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines of one stage's "what won and why" and the PNGs written for it."""
    lines = [f"### {stage}", "", _search_line(rows), ""]
    lines += [f"Ranked by `{RANK_METRIC}`, the mean val_loss of each run's last {window} epochs, pruned runs "
              f"included" + ("; runs of one configuration (repeats) rank it by their mean" if standing.repeats
                             else "") + f": {len(standing.ranked)} of {len(rows)} runs ranked.", ""]
    winner = standing.winner
    if winner is None:
        return lines + ["No run of this stage is ranked (none finished or was pruned with a finite "
                        "val_loss), so nothing won.", ""], []
    written: list[Path] = []
    params = swept_parameters(rows)
    lines += _winner_lines(winner, standing.repeats) + [""]
    lines += _top_table(standing, params, evaluations) + [""]
    lines += _test_figures(winner, standing.repeats, evaluations) + [""]

    for part in (_top_curves(stage, standing, series, window, assets, out),
                 _equity(stage, winner.best, equity, assets, out),
                 _importance(stage, rows, standing, winner.best, assets, out)):
        lines += part[0]
        written += part[1]
    return lines, written


def _top_curves(stage: str, standing: Standing, series: dict[tuple[str, str], list[tuple[int, float]]],
                window: int, assets: Path, out: Path) -> tuple[list[str], list[Path]]:
    from . import _plots

    curves = []
    for rank, row in enumerate(standing.ranked[:TOP_CURVES], start=1):
        points = series.get((row["stage"], row["trial_id"]))
        if points:
            values = [v for _, v in points]
            curves.append({"rank": rank, "trial_id": row["trial_id"], "status": row["status"],
                           "epochs": [e for e, _ in points], "val_loss": values,
                           "smoothed": smoothed_curve(values, window)})
    if not curves:
        return [], []
    path = _plots.top_trials(assets / f"top_trials_{slug(stage)}.png", stage, curves, window, RANK_METRIC)
    return [f"![top {len(curves)} runs of stage {stage}: val_loss and its rolling mean per epoch]"
            f"({path.relative_to(out).as_posix()})", ""], [path]


def _equity(stage: str, best: dict[str, Any], equity: pa.Table | None, assets: Path,
            out: Path) -> tuple[list[str], list[Path]]:
    from . import _plots

    curve = equity_series(equity, stage, str(best["trial_id"]))
    if curve is None:
        return [f"No equity curve for `{best['trial_id']}` in the tables (no equity_<split>.csv or "
                f"evaluation_equity_<split>.csv was ingested for it).", ""], []
    origin = ("its test evaluation (the ranked checkpoint)" if curve["source"] == "evaluation"
              else "the run's own equity file (written when the run ended, not from the ranked checkpoint)")
    path = _plots.equity(assets / f"winner_equity_{slug(stage)}.png",
                         f"{stage}: {best['trial_id']} on {curve['split']} ({curve['source']})",
                         curve["steps"], curve["series"])
    return [f"Equity of `{best['trial_id']}` on the `{curve['split']}` split, from {origin}, against "
            f"equal weight and the best buy-and-hold asset:", "",
            f"![equity of {best['trial_id']}]({path.relative_to(out).as_posix()})", ""], [path]


def _importance(stage: str, rows: list[dict[str, Any]], standing: Standing, best: dict[str, Any],
                assets: Path, out: Path) -> tuple[list[str], list[Path]]:
    from . import _plots

    effects = parameter_effects(rows, standing.ranked, RANK_METRIC)
    if not effects:
        return ["No parameter varies among this stage's runs, so there is no parameter-importance view.", ""], []
    path = _plots.parameter_importance(assets / f"parameter_importance_{slug(stage)}.png", stage, RANK_METRIC,
                                       effects, str(best["trial_id"]))
    lines = [f"Parameter importance: `{RANK_METRIC}` of each ranked run against each swept parameter. "
             f"Spearman's ρ is the rank correlation over those runs; negative means larger values ranked "
             f"better (lower loss). It measures association in this sample, not cause.", ""]
    lines += _importance_table(effects, best)
    lines += ["", f"![{RANK_METRIC} against each parameter, stage {stage}]({path.relative_to(out).as_posix()})", ""]
    return lines, [path]


def _search_line(rows: list[dict[str, Any]]) -> str:
    if not any("search" in r for r in rows):
        return "Search algorithm: not recorded (these tables predate the `search` column)."
    searches = sorted({str(r["search"]) for r in rows if r.get("search") is not None})
    if not searches:
        return "Search algorithm: not recorded for these runs."
    return "Search algorithm: " + ", ".join(f"`{s}` ({SEARCH_NAMES.get(s, s)})" for s in searches) + "."


def _params_text(row: dict[str, Any]) -> str:
    pairs = [f"{display_name(k)} = {fmt(row[k])}" for k in sorted(row) if k.startswith(PARAM_PREFIX)
             and k != REPEAT_COLUMN and row[k] is not None]
    return ", ".join(pairs) if pairs else "(no sampled parameters recorded)"


def _winner_lines(winner: Configuration, repeats: bool) -> list[str]:
    best = winner.best
    single = (f"its best single epoch had val_loss {fmt(best.get('best_val_loss'))} at epoch "
              f"{fmt(best.get('best_val_loss_epoch'))}" if finite(best.get("best_val_loss")) else None)
    if repeats:
        lines = [f"**Winner: configuration `{winner.label}`**, {RANK_METRIC} {mean_std(winner.value, winner.std)} "
                 f"(mean ± std over {winner.runs} run{'s' if winner.runs != 1 else ''} of {len(winner.trials)}); "
                 f"its best run `{best['trial_id']}` ({best['status']}, {RANK_METRIC} {fmt(best[RANK_METRIC])})."]
    else:
        lines = [f"**Winner: `{best['trial_id']}`** ({best['status']}), {RANK_METRIC} {fmt(best[RANK_METRIC])}"
                 + (f"; {single}" if single else "") + "."]
    if repeats:
        lines += ["", f"Its parameters: {_params_text(best)}."]
    else:
        config = f"configuration `{winner.config_id}`" if winner.config_id is not None else "configuration"
        lines += ["", f"Its {config}: {_params_text(best)}."]
    return lines


def _top_table(standing: Standing, params: list[str], evaluations: bool) -> list[str]:
    names = [display_name(p) for p in params]
    shown = standing.configurations[:TOP_TABLE]
    if standing.repeats:
        header = ["rank", "configuration", f"{RANK_METRIC} (mean ± std)", "runs", "best run",
                  *(["test_loss (eval, mean)"] if evaluations else []), *names]
        body = [[i, c.label, mean_std(c.value, c.std), f"{c.runs}/{len(c.trials)}", c.best["trial_id"],
                 *([_mean([r.get("eval_test_loss") for r in c.trials])] if evaluations else []),
                 *(c.best.get(p) for p in params)] for i, c in enumerate(shown, start=1)]
        title = f"Top configurations ({len(shown)} of {len(standing.configurations)} ranked):"
    else:
        header = ["rank", "trial", "status", RANK_METRIC, "min val_loss", "epochs",
                  *(["test_loss (eval)"] if evaluations else []), *names]
        body = [[i, c.best["trial_id"], c.best["status"], c.value, c.best.get("best_val_loss"),
                 c.best.get("last_epoch"), *([c.best.get("eval_test_loss")] if evaluations else []),
                 *(c.best.get(p) for p in params)] for i, c in enumerate(shown, start=1)]
        title = f"Top runs ({len(shown)} of {len(standing.ranked)} ranked):"
    return [title, "", *table(header, body)]


def _mean(values: list[Any]) -> float | None:
    values = [v for v in values if finite(v)]
    return statistics.fmean(values) if values else None


def _test_figures(winner: Configuration, repeats: bool, evaluations: bool) -> list[str]:
    best = winner.best
    runs = [r for r in winner.trials if evaluated(r)]
    failures = [f"The evaluation of `{r['trial_id']}` failed: {last_line(r['eval_error'])}"
                for r in winner.trials if r.get("eval_error")]
    if runs:
        figures = [(c, label) for c, label in TEST_FIGURES if any(finite(r.get(c)) for r in runs)]
        splits = sorted({str(r.get("eval_portfolio_split") or "test") for r in runs})
        header = ["run", "checkpoint", "epoch", *(label for _, label in figures)]
        body = [[r["trial_id"], r.get("eval_checkpoint"), r.get("eval_checkpoint_epoch"),
                 *(r.get(c) for c, _ in figures)] for r in runs]
        if len(runs) > 1:
            body.append(["mean ± std", None, None, *(_spread([r.get(c) for r in runs]) for c, _ in figures)])
        out = [f"Test figures on the `{', '.join(splits)}` split, from the evaluation of each run's best "
               f"checkpoint by {RANK_METRIC}:", "", *table(header, body)]
        verdict = baseline_verdict(*(_mean([r.get(f"eval_portfolio_{n}_log_return") for r in runs])
                                     for n in ("policy", "equal_weight", "best_buy_and_hold")),
                                   split=", ".join(splits))
        if verdict:
            out += ["", f"**{verdict}**" + (" (means over the evaluated runs)" if len(runs) > 1 else "")]
        return out + (["", " ".join(failures)] if failures else [])
    if not evaluations:
        sentence = ("No test figures: these tables have no evaluation columns (the sweep ran before its top "
                    "trials were evaluated on the test split, or was ingested before that).")
    else:
        who = (f"no run of configuration `{winner.label}` has a" if repeats
               else f"`{best['trial_id']}` has no")
        sentence = (f"No test figures: {who} test evaluation in the tables"
                    + (" (the evaluation failed)." if failures else " (no evaluation.json was ingested for it)."))
    parts = [sentence, *failures]
    if finite(best.get("test_loss")):
        parts.append(f"The run itself reported test_loss {fmt(best['test_loss'])} on its "
                     f"`{best.get('eval_split') or '?'}` split when it ended (not from the ranked checkpoint).")
    return [" ".join(parts)]


def _spread(values: list[Any]) -> str:
    values = [float(v) for v in values if finite(v)]
    if not values:
        return "–"
    return mean_std(statistics.fmean(values), statistics.pstdev(values))


def _importance_table(effects: list[ParameterEffect], best: dict[str, Any]) -> list[str]:
    return table(["parameter", "kind", "values", "ranked runs", "Spearman ρ", "winner's value"], (
        [e.name, e.kind, e.distinct, len(e.y), None if e.rho is None else round(e.rho, 3), best.get(e.column)]
        for e in effects))


def equity_series(equity: pa.Table | None, stage: str, trial_id: str) -> dict[str, Any] | None:
    """The trial's equity curve from the equity table: the evaluation's, else the run's; test split first."""
    if equity is None or equity.num_rows == 0 or not {"stage", "trial_id", "step"} <= set(equity.column_names):
        return None
    mine = equity.filter(pc.and_(pc.equal(equity["stage"], stage), pc.equal(equity["trial_id"], trial_id)))
    if mine.num_rows == 0:
        return None
    rows = mine.to_pylist()
    sources = sorted({str(r.get("source") or "run") for r in rows},
                     key=lambda s: (EQUITY_SOURCES.index(s) if s in EQUITY_SOURCES else len(EQUITY_SOURCES), s))
    rows = [r for r in rows if str(r.get("source") or "run") == sources[0]]
    splits = sorted({str(r.get("split") or "?") for r in rows}, key=lambda s: (s != "test", s))
    rows = sorted((r for r in rows if str(r.get("split") or "?") == splits[0]), key=lambda r: r["step"])
    names = [n for n in ("policy", "equal_weight", "best_buy_and_hold") if n in equity.column_names]
    return {"source": sources[0], "split": splits[0], "steps": [r["step"] for r in rows],
            "series": {n: [r[n] if r[n] is not None else float("nan") for r in rows] for n in names}}
