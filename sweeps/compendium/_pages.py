"""Markdown pages of the results compendium, built from the Arrow tables only."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from psann.contract import (
    BEST_TRIAL_METRIC,
    SUCCESS,
    TRIAL_STATUSES,
    UNFINISHED_STATUSES,
    best_trial,
)

from ..results import load_events, load_trials

MAX_CURVES = 300  # per stage in a learning-curve plot; the best by val_loss when there are more
# metrics.json throughput columns: HISSO runs count episodes, supervised runs samples.
THROUGHPUT_COLUMNS = (("throughput_eps_per_sec", "episodes/s"), ("throughput_samples_per_sec", "samples/s"))

MAX_RUN_ROWS = 100  # per stage in the run table; the rest are counted, not listed
_HEADER = re.compile(r"^<!-- compendium: (\{.*\}) -->$")
_STATUS_RANK = {s: i for i, s in enumerate(TRIAL_STATUSES)}


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
    sweep = trials["sweep"][0].as_py() if trials.num_rows else Path(sweep_path).name
    out = Path(out_dir)
    assets = out / sweep
    rows = _sorted_rows(trials)
    stages = _stage_order(rows)
    written: list[Path] = []

    images: dict[str, str] = {}
    curves = _curves(rows, events)
    for stage in stages:
        if curves.get(stage):
            path = _plots.learning_curves(assets / f"learning_curves_{_slug(stage)}.png", stage,
                                          curves[stage])
            images[f"curves:{stage}"] = path.relative_to(out).as_posix()
            written.append(path)
    points = [
        {"stage": r["stage"], "turnover": r["portfolio_policy_turnover"], "reward_mean": r["reward_mean"]}
        for r in rows if _finite(r.get("portfolio_policy_turnover")) and _finite(r.get("reward_mean"))
    ]
    if points:
        path = _plots.reward_vs_turnover(assets / "reward_vs_turnover.png", points)
        images["scatter"] = path.relative_to(out).as_posix()
        written.append(path)
    if assets.is_dir():  # plots of stages that no longer exist
        for stale in sorted(assets.glob("*.png")):
            if stale not in written:
                stale.unlink()

    page = out / f"{sweep}.md"
    _write_text(page, _sweep_page(sweep, rows, stages, images))
    written.append(page)
    index = out / "index.md"
    _write_text(index, _index_page(out))
    written.append(index)
    return written


# --------------------------------------------------------------------------- data


def _sorted_rows(trials: pa.Table) -> list[dict[str, Any]]:
    rows = trials.to_pylist()
    rows.sort(key=lambda r: (r["stage"], _STATUS_RANK.get(r["status"], 99),
                             _sort_number(r.get("val_loss")), r["trial_id"], r["trial_dir"]))
    return rows


def _sort_number(value: Any) -> float:
    return value if _finite(value) else math.inf


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stage_order(rows: list[dict[str, Any]]) -> list[str]:
    """Stages in the order they ran (earliest first event), then by name."""
    first: dict[str, str] = {}
    for r in rows:
        at = r.get("first_event_at")
        key = at.isoformat() if at is not None else "~"
        first[r["stage"]] = min(first.get(r["stage"], "~"), key)
    return sorted(first, key=lambda s: (first[s], s))


def _curves(rows: list[dict[str, Any]], events: pa.Table) -> dict[str, list[dict[str, Any]]]:
    epoch_rows = events.filter(pc.equal(events["event"], "epoch")).select(
        ["stage", "trial_id", "phase", "epoch", "val_loss", "seq"]).sort_by(
        [("stage", "ascending"), ("trial_id", "ascending"), ("seq", "ascending")])
    by_trial: dict[tuple[str, str], list[tuple]] = {}
    for stage, trial, phase, epoch, val, _ in zip(*(epoch_rows[c].to_pylist() for c in epoch_rows.column_names)):
        by_trial.setdefault((stage, trial), []).append((phase, epoch, val))
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        points = [(e, v) for phase, e, v in by_trial.get((r["stage"], r["trial_id"]), [])
                  if phase == r.get("main_phase") and e is not None and _finite(v)]
        if points:
            curves.setdefault(r["stage"], []).append({
                "trial_id": r["trial_id"], "status": r["status"], "best": _sort_number(r.get("best_val_loss")),
                "epochs": [p[0] for p in points], "val_loss": [p[1] for p in points]})
    for stage, items in curves.items():
        if len(items) > MAX_CURVES:
            items = sorted(items, key=lambda c: (c["best"], c["trial_id"]))[: MAX_CURVES]
        curves[stage] = sorted(items, key=lambda c: c["trial_id"])
    return curves


# --------------------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _amp(r: dict[str, Any]) -> str:
    if r.get("amp_enabled") is None:
        return "–"
    return (r.get("amp_dtype") or "on") if r["amp_enabled"] else "off"


def _varying_params(rows: list[dict[str, Any]]) -> list[str]:
    names = sorted({k for r in rows for k in r if k.startswith("params_")})
    return [n for n in names if len({json.dumps(r.get(n), sort_keys=True) for r in rows}) > 1]


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if _finite(v)]
    return statistics.median(values) if values else None


def _throughputs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The throughput columns some of ``rows`` have a value in (column, label)."""
    return [(c, label) for c, label in THROUGHPUT_COLUMNS if any(_finite(r.get(c)) for r in rows)]


def _test_header(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """Header of the test_loss column, and whether the rows need an eval-split column."""
    splits = {r.get("eval_split") for r in rows} - {None}
    if len(splits) == 1:
        return f"test ({splits.pop()})", False
    return "test", len(splits) > 1


def _sweep_page(sweep: str, rows: list[dict[str, Any]], stages: list[str],
                images: dict[str, str]) -> str:
    best = best_trial(rows)
    header = {"sweep": sweep, "trials": len(rows), "stages": stages,
              "best_val_loss": best[BEST_TRIAL_METRIC] if best else None,
              "best_trial": f"{best['stage']}/{best['trial_id']}" if best else None}
    lines = [f"<!-- compendium: {json.dumps(header, sort_keys=True)} -->",
             f"# Sweep `{sweep}`", "",
             f"{len(rows)} trials in {len(stages)} stage(s). Generated by "
             f"`python -m sweeps.compendium` from the sweep's Arrow tables; "
             f"[all sweeps](index.md).", ""]
    if best:
        lines += [f"Best finished trial by {BEST_TRIAL_METRIC}: `{best['stage']}/{best['trial_id']}` "
                  f"({BEST_TRIAL_METRIC} {_fmt(best[BEST_TRIAL_METRIC])}).", ""]

    lines += ["## Stages", ""]
    stage_rows = []
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage]
        counts = [sum(r["status"] == s for r in mine) for s in TRIAL_STATUSES]
        top = best_trial(mine)
        stage_rows.append([stage, len(mine), *counts, top["trial_id"] if top else None,
                           top[BEST_TRIAL_METRIC] if top else None])
    lines += _table(["stage", "trials", *(s.lower() for s in TRIAL_STATUSES), "best trial",
                     f"best {BEST_TRIAL_METRIC}"], stage_rows)

    lines += ["", "## Devices (GPU sweep summary)", ""]
    throughputs = _throughputs(rows)
    device_rows = []
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage]
        for device in sorted({r.get("device") or "–" for r in mine}):
            group = [r for r in mine if (r.get("device") or "–") == device]
            amps = sorted({_amp(r) for r in group})
            seconds = sum(r["duration_seconds"] for r in group if _finite(r.get("duration_seconds")))
            skipped = sum(r.get("amp_skipped_steps") or 0 for r in group)
            top = best_trial(group)
            device_rows.append([stage, device, len(group), sum(r["status"] == SUCCESS for r in group),
                                ", ".join(amps), *(_median([r.get(c) for r in group]) for c, _ in throughputs),
                                _median([r.get("duration_seconds") for r in group]),
                                seconds / 3600.0, skipped, top[BEST_TRIAL_METRIC] if top else None])
    lines += _table(["stage", "device", "trials", "success", "AMP",
                     *(f"median {label}" for _, label in throughputs),
                     "median duration (s)", "device hours", "AMP skipped steps",
                     f"best {BEST_TRIAL_METRIC}"], device_rows)

    lines += ["", "## Runs", ""]
    for stage in stages:
        mine = [r for r in rows if r["stage"] == stage]
        params = _varying_params(mine)
        throughputs = _throughputs(mine)
        test_header, split_column = _test_header(mine)
        lines += [f"### {stage}", ""]
        header_row = ["trial", "status", *(label for _, label in throughputs), "best epoch", "train", "val",
                      test_header, *(["eval split"] if split_column else []), "reward_mean", "turnover",
                      "Sharpe", "AMP", "duration (s)", *[p[len("params_"):].replace("__", ".") for p in params]]
        lines += _table(header_row, (
            [r["trial_id"], r["status"], *(r.get(c) for c, _ in throughputs), r.get("best_epoch"),
             r.get("train_loss"), r.get("val_loss"), r.get("test_loss"),
             *([r.get("eval_split")] if split_column else []), r.get("reward_mean"),
             r.get("portfolio_policy_turnover"), r.get("portfolio_policy_sharpe"), _amp(r),
             r.get("duration_seconds"), *[r.get(p) for p in params]]
            for r in mine[:MAX_RUN_ROWS]))
        if len(mine) > MAX_RUN_ROWS:
            lines += ["", f"… and {len(mine) - MAX_RUN_ROWS} more trials (query the tables for all)."]
        if f"curves:{stage}" in images:
            lines += ["", f"![val_loss per epoch, stage {stage}]({images[f'curves:{stage}']})"]
        lines.append("")

    if "scatter" in images:
        lines += ["## Reward vs turnover", "", f"![reward_mean vs turnover]({images['scatter']})", ""]

    failed = [r for r in rows if r["status"] in UNFINISHED_STATUSES]
    if failed:
        lines += ["## Trials that did not finish", ""]
        lines += _table(["stage", "trial", "status", "reason (last line)"], (
            [r["stage"], r["trial_id"], r["status"], _last_line(r.get("error"))] for r in failed))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _last_line(text: str | None) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[-1]
    return line if len(line) <= 160 else line[:159] + "…"


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
    lines += _table(["sweep", "trials", "stages", "best val_loss", "best trial"], (
        [f"[{meta['sweep']}]({name})", meta["trials"], ", ".join(meta["stages"]),
         meta["best_val_loss"], meta["best_trial"]] for name, meta in entries))
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return  # unchanged: keep the file (and its mtime) as it is
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
