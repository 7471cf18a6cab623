"""Markdown pages of the results compendium, built from the Arrow tables only."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

from psann.contract import RANK_METRIC, SUCCESS, TRIAL_STATUSES, UNFINISHED_STATUSES, best_trial
from psann.provenance import PROVENANCE_KEYS

from ..results import load_equity, load_events, load_trials
from ._importance import display_name, swept_parameters
from ._markdown import fmt, last_line, mean_std, slug, table, write_text
from ._rows import (Configuration, Standing, epoch_series, fill_rank_metric, finite, rank_window, sort_number,
                    standing, sweep_winner)
from ._winner import has_evaluations, stage_section

MAX_CURVES = 300  # per stage in a learning-curve plot; the best by the ranking rule when there are more
# metrics.json throughput columns: HISSO runs count episodes, supervised runs samples.
THROUGHPUT_COLUMNS = (("throughput_eps_per_sec", "episodes/s"), ("throughput_samples_per_sec", "samples/s"))

MAX_RUN_ROWS = 100  # per stage in the run table; the rest are counted, not listed
MAX_PROVENANCE_VALUES = 6  # distinct values listed per provenance field (hosts of a large cluster)
_HEADER = re.compile(r"^<!-- compendium: (\{.*\}) -->$")
_BEST_KEY = f"best_{RANK_METRIC}"  # in the page's header comment, read back by the index


def build_compendium(sweep_path: str | os.PathLike, out_dir: str | os.PathLike = "docs/results"
                     ) -> list[Path]:
    """Write `<out>/<sweep>.md`, its PNG plots under `<out>/<sweep>/`, and `<out>/index.md`.

    Reads `<sweep>/tables/` (run `python -m sweeps.results ingest` first).  Building again
    from the same tables gives byte-identical files.  Returns the paths written.

    Example::

        build_compendium("runs/sweeps/hisso_wave", "docs/results")
    """
    from . import _plots  # matplotlib is imported only when a compendium is built

    trials = load_trials(sweep_path)
    events = load_events(sweep_path)
    equity = load_equity(sweep_path)
    sweep = trials["sweep"][0].as_py() if trials.num_rows else Path(sweep_path).name
    out = Path(out_dir)
    assets = out / sweep
    rows = sorted(trials.to_pylist(), key=lambda r: (r["stage"], str(r["trial_id"]), str(r.get("trial_dir"))))
    series = epoch_series(events, rows)
    derived = fill_rank_metric(rows, series)
    stages = _stage_order(rows)
    by_stage = {stage: [r for r in rows if r["stage"] == stage] for stage in stages}
    standings = {stage: standing(mine) for stage, mine in by_stage.items()}
    evaluations = has_evaluations(trials.column_names)
    written: list[Path] = []

    images: dict[str, str] = {}
    won: list[str] = []
    for stage in stages:
        lines, paths = stage_section(stage, by_stage[stage], standings[stage],
                                     window=rank_window(by_stage[stage]), series=series, equity=equity,
                                     evaluations=evaluations, assets=assets, out=out)
        won += lines
        written += paths
    for stage in stages:
        curves = _curves(by_stage[stage], standings[stage], series)
        if curves:
            path = _plots.learning_curves(assets / f"learning_curves_{slug(stage)}.png", stage, curves)
            images[f"curves:{stage}"] = path.relative_to(out).as_posix()
            written.append(path)
    points = [
        {"stage": r["stage"], "turnover": r["portfolio_policy_turnover"], "reward_mean": r["reward_mean"]}
        for r in rows if finite(r.get("portfolio_policy_turnover")) and finite(r.get("reward_mean"))
    ]
    if points:
        path = _plots.reward_vs_turnover(assets / "reward_vs_turnover.png", points)
        images["scatter"] = path.relative_to(out).as_posix()
        written.append(path)
    if assets.is_dir():  # plots of stages (or views) that no longer exist
        for stale in sorted(assets.glob("*.png")):
            if stale not in written:
                stale.unlink()
    written.sort(key=lambda p: p.as_posix())

    page = out / f"{sweep}.md"
    write_text(page, _sweep_page(sweep, rows, stages, by_stage, standings, images, won, derived))
    written.append(page)
    index = out / "index.md"
    write_text(index, _index_page(out))
    written.append(index)
    return written


# --------------------------------------------------------------------------- data


def _stage_order(rows: list[dict[str, Any]]) -> list[str]:
    """Stages in the order they ran (earliest first event), then by name."""
    first: dict[str, str] = {}
    for r in rows:
        at = r.get("first_event_at")
        key = at.isoformat() if at is not None else "~"
        first[r["stage"]] = min(first.get(r["stage"], "~"), key)
    return sorted(first, key=lambda s: (first[s], s))


def _curves(rows: list[dict[str, Any]], ranking: Standing,
            series: dict[tuple[str, str], list[tuple[int, float]]]) -> list[dict[str, Any]]:
    """Every run's val_loss per epoch (finite values), at most MAX_CURVES: the best ranked first."""
    curves = []
    ranks = ranking.trial_ranks()
    for r in rows:
        points = [(e, v) for e, v in series.get((r["stage"], r["trial_id"]), []) if finite(v)]
        if points:
            curves.append({"trial_id": r["trial_id"], "status": r["status"],
                           "order": (sort_number(ranks.get(id(r))), str(r["trial_id"])),
                           "epochs": [p[0] for p in points], "val_loss": [p[1] for p in points]})
    if len(curves) > MAX_CURVES:
        curves = sorted(curves, key=lambda c: c["order"])[:MAX_CURVES]
    return sorted(curves, key=lambda c: str(c["trial_id"]))


# --------------------------------------------------------------------------- markdown


def _amp(r: dict[str, Any]) -> str:
    if r.get("amp_enabled") is None:
        return "–"
    return (r.get("amp_dtype") or "on") if r["amp_enabled"] else "off"


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if finite(v)]
    return statistics.median(values) if values else None


def _throughputs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The throughput columns some of ``rows`` have a value in (column, label)."""
    return [(c, label) for c, label in THROUGHPUT_COLUMNS if any(finite(r.get(c)) for r in rows)]


def _test_header(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """Header of the test_loss column, and whether the rows need an eval-split column."""
    splits = {r.get("eval_split") for r in rows} - {None}
    if len(splits) == 1:
        return f"test ({splits.pop()})", False
    return "test", len(splits) > 1


def _best_text(stage: str, winner: Configuration, repeats: bool) -> str:
    best = winner.best
    if repeats:
        return (f"configuration `{stage}/{winner.label}` ({RANK_METRIC} {mean_std(winner.value, winner.std)}, "
                f"mean ± std over {winner.runs} runs), best run `{stage}/{best['trial_id']}`")
    return f"`{stage}/{best['trial_id']}` ({best['status']}, {RANK_METRIC} {fmt(winner.value)})"


def _sweep_page(sweep: str, rows: list[dict[str, Any]], stages: list[str],
                by_stage: dict[str, list[dict[str, Any]]], standings: dict[str, Standing],
                images: dict[str, str], won: list[str], derived: bool) -> str:
    top = sweep_winner(standings)
    header = {"sweep": sweep, "trials": len(rows), "stages": stages,
              _BEST_KEY: top[1].value if top else None,
              "best_trial": f"{top[0]}/{top[1].best['trial_id']}" if top else None}
    lines = [f"<!-- compendium: {json.dumps(header, sort_keys=True)} -->",
             f"# Sweep `{sweep}`", "",
             f"{len(rows)} trials in {len(stages)} stage(s). Generated by "
             f"`python -m sweeps.compendium` from the sweep's Arrow tables; "
             f"[all sweeps](index.md).", ""]
    if top:
        lines += [f"Best by {RANK_METRIC} (pruned runs included): {_best_text(*top, standings[top[0]].repeats)}.", ""]
    if derived:
        lines += [f"These tables have no {RANK_METRIC} column (ingested before it existed); it was computed "
                  f"here from the events, as the ranking rule defines it.", ""]

    lines += ["## What won and why", "", *won]

    repeats = any(s.repeats for s in standings.values())
    lines += ["## Stages", ""]
    stage_rows = []
    # stage_status.json's own status (a stage a GPU budget stopped, ...), shown when any stage has one.
    stage_status = any(r.get("stage_status") is not None for r in rows)
    for stage in stages:
        mine, winner = by_stage[stage], standings[stage].winner
        counts = [sum(r["status"] == s for r in mine) for s in TRIAL_STATUSES]
        status = sorted({str(r["stage_status"]) for r in mine if r.get("stage_status") is not None})
        stage_rows.append([stage, *([", ".join(status) or None] if stage_status else []), len(mine), *counts,
                           *([winner.label if winner else None] if repeats else []),
                           winner.best["trial_id"] if winner else None,
                           (mean_std(winner.value, winner.std) if repeats else winner.value) if winner else None])
    lines += table(["stage", *(["stage status"] if stage_status else []), "trials", *(s.lower() for s in TRIAL_STATUSES),
                    *(["best configuration"] if repeats else []), "best trial",
                    f"best {RANK_METRIC}" + (" (mean ± std)" if repeats else "")], stage_rows)

    lines += ["", "## Devices (GPU sweep summary)", ""]
    throughputs = _throughputs(rows)
    device_rows = []
    for stage in stages:
        mine = by_stage[stage]
        for device in sorted({r.get("device") or "–" for r in mine}):
            group = [r for r in mine if (r.get("device") or "–") == device]
            amps = sorted({_amp(r) for r in group})
            seconds = sum(r["duration_seconds"] for r in group if finite(r.get("duration_seconds")))
            skipped = sum(r.get("amp_skipped_steps") or 0 for r in group)
            best = best_trial(group)
            device_rows.append([stage, device, len(group), sum(r["status"] == SUCCESS for r in group),
                                ", ".join(amps), *(_median([r.get(c) for r in group]) for c, _ in throughputs),
                                _median([r.get("duration_seconds") for r in group]),
                                seconds / 3600.0, skipped, best[RANK_METRIC] if best else None])
    lines += table(["stage", "device", "trials", "success", "AMP",
                    *(f"median {label}" for _, label in throughputs),
                    "median duration (s)", "device hours", "AMP skipped steps",
                    f"best {RANK_METRIC}"], device_rows)

    lines += ["", "## Provenance", "", *_provenance(rows)]

    lines += ["", "## Runs", ""]
    for stage in stages:
        lines += [f"### {stage}", "", *_runs_table(by_stage[stage], standings[stage])]
        if f"curves:{stage}" in images:
            lines += ["", f"![val_loss per epoch, stage {stage}]({images[f'curves:{stage}']})"]
        lines.append("")

    if "scatter" in images:
        lines += ["## Reward vs turnover", "", f"![reward_mean vs turnover]({images['scatter']})", ""]

    failed = [r for r in rows if r["status"] in UNFINISHED_STATUSES]
    if failed:
        lines += ["## Trials that did not finish", ""]
        lines += table(["stage", "trial", "status", "reason (last line)"], (
            [r["stage"], r["trial_id"], r["status"], last_line(r.get("error"))] for r in failed))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _provenance(rows: list[dict[str, Any]]) -> list[str]:
    """Where the sweep's results came from, once for the sweep: each provenance field's values.

    A field with one value across the trials shows it; with several, each value and its trial
    count (most trials first), at most MAX_PROVENANCE_VALUES of them.
    """
    columns = [(key, f"provenance_{key}") for key in PROVENANCE_KEYS]
    if not any(r.get(column) is not None for r in rows for _, column in columns):
        return ["Not recorded: these trials were run before metrics.json carried provenance."]
    body = []
    for key, column in columns:
        counts: dict[str, int] = {}
        for r in rows:
            text = fmt(r.get(column))
            counts[text] = counts.get(text, 0) + 1
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if len(ordered) == 1:
            value = ordered[0][0]
        else:
            shown = [f"{text} ({n})" for text, n in ordered[:MAX_PROVENANCE_VALUES]]
            more = len(ordered) - MAX_PROVENANCE_VALUES
            value = ", ".join(shown) + (f", … and {more} more" if more > 0 else "")
        body.append([key, value])
    return ["As each trial recorded it (metrics.json `provenance`); with several values, the number of "
            "trials of each in brackets.", "", *table(["field", "value"], body)]


def _runs_table(mine: list[dict[str, Any]], ranking: Standing) -> list[str]:
    """One row per run, in ranking order (by configuration with repeats), unranked runs last."""
    params = swept_parameters(mine)
    throughputs = _throughputs(mine)
    test_header, split_column = _test_header(mine)
    eval_column = any(finite(r.get("eval_test_loss")) for r in mine)
    ordered = ranking.display_order(mine)
    header = ["config rank" if ranking.repeats else "rank", "trial", "status",
              *(["configuration", "repeat"] if ranking.repeats else []),
              *(label for _, label in throughputs), "best epoch", "train", "val", RANK_METRIC,
              test_header, *(["eval split"] if split_column else []),
              *(["test_loss (eval)"] if eval_column else []), "reward_mean", "turnover",
              "Sharpe", "AMP", "duration (s)", *(display_name(p) for p in params)]
    lines = table(header, (
        [rank, r["trial_id"], r["status"], *([r.get("config_id"), r.get("repeat")] if ranking.repeats else []),
         *(r.get(c) for c, _ in throughputs), r.get("best_epoch"), r.get("train_loss"), r.get("val_loss"),
         r.get(RANK_METRIC), r.get("test_loss"), *([r.get("eval_split")] if split_column else []),
         *([r.get("eval_test_loss")] if eval_column else []), r.get("reward_mean"),
         r.get("portfolio_policy_turnover"), r.get("portfolio_policy_sharpe"), _amp(r),
         r.get("duration_seconds"), *(r.get(p) for p in params)]
        for rank, r in ordered[:MAX_RUN_ROWS]))
    if len(mine) > MAX_RUN_ROWS:
        lines += ["", f"… and {len(mine) - MAX_RUN_ROWS} more trials (query the tables for all)."]
    return lines


def _index_page(out: Path) -> str:
    entries = []
    for page in sorted(out.glob("*.md")):
        if page.name == "index.md":
            continue
        first = page.read_text().split("\n", 1)[0]
        match = _HEADER.match(first)
        if match:
            entries.append((page.name, json.loads(match.group(1))))
    lines = ["# Sweep results", "",
             "One page per sweep, generated by `python -m sweeps.compendium`.", ""]
    # A page written before the ranking rule of issue 14 has no best_val_loss_smoothed: "–".
    lines += table(["sweep", "trials", "stages", f"best {RANK_METRIC}", "best trial"], (
        [f"[{meta['sweep']}]({name})", meta["trials"], ", ".join(meta["stages"]),
         meta.get(_BEST_KEY), meta.get("best_trial") if _BEST_KEY in meta else None] for name, meta in entries))
    return "\n".join(lines) + "\n"
