"""Sweep overhead benchmark: ASHA's quality against the full sweep, and what reporting costs a run.

Everything runs through the real sweep code: each sweep is a YAML sweep file (seeded random
search over lr x w0, rank_window 3, the report cadence) loaded with ``sweeps.spec.load_sweep`` and
run with ``sweeps.stages.run_sweep`` on an embedded local Ray with --cores CPUs. The trials are
a dense PSANN HISSO policy on the built-in regime market, --epochs epochs of a few seconds in all.

Part 1, "ASHA that keeps the eventual best" (issue 14, item 6). For each --seeds s:

  F. the full sweep: --configs sampled configurations (sweep seed s: the search and the runs), no
     scheduler; its configurations are ranked by the ranking rule (val_loss_smoothed, the mean
     val_loss of the last 3 epochs: ``StageResult.configurations()``);
  S. ASHA simulated on F's per-epoch val_loss curves (events.csv) for a grid of settings
     (reduction factor, grace period, rung metric smoothed or raw, the first n of the sampled
     configurations), at concurrency 1 (Ray's ASHA rule exactly: seeded runs repeat their curves)
     and at concurrency --cores (approximate: every epoch taken to last as long);
  A. real ASHA stages (same sweep file and seed, so the same configurations) for the chosen
     setting (the cheapest that passes on every seed; without one, the Pareto trade-off with the
     smallest worst-seed loss within 55% of the epochs), the best within 40% and the current
     default, at max_concurrent_trials --asha-concurrency (1: the prune decisions are
     reproducible and must match the simulation, which the report checks).
  ASHA passes on a seed when its winner by the ranking rule (pruned trials included:
  ``StageResult.best()``) is one of F's top 2 configurations while it spends <= 40% of F's epochs.

Part 2, reporting cost (item 7): --pairs rounds of, interleaved, the same run alone
(``psann.runs.execute_run`` in this process, one torch thread, the trial's seed) and the same run
as a 1-trial sweep stage for each --cadences every_epochs (every_seconds 120); the ratio is the
run's duration_seconds (metrics.json) in the trial over the alone run's in the same round.

Writes bench/reports/sweep_overhead.md/.json (--quick: sweep_overhead_quick.md/.json).

    python bench/sweep_overhead.py                  # 2 seeds x 16 configs x 30 epochs; ~22 min on 2 busy cores
    python bench/sweep_overhead.py --quick          # 2 seeds x 8 configs x 12 epochs, a smoke run (~5-7 min)
    python bench/sweep_overhead.py --seeds 0 1 2 --skip-cost
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psann.contract import MAIN_PHASES, RANK_WINDOW, smoothed_loss  # noqa: E402

TARGET_FRACTION = 0.40  # ASHA may spend at most this share of the full sweep's epochs
TOP = 2  # ASHA's winner must be among the full sweep's top TOP configurations
TRADEOFF_FRACTION = 0.55  # without a passing setting: the budget the recommended trade-off may spend
COST_TARGET = 1.15  # a run inside a trial may take at most this many times the run alone
SEARCH_SPACE = {"estimator.params.lr": {"loguniform": [0.0002, 0.005]}, "estimator.params.w0": {"loguniform": [0.5, 10.0]}}
RUN_CONFIG: dict[str, Any] = {
    "estimator": {
        "target": "psann.PSANNRegressor",
        "params": {"hidden_layers": 2, "hidden_units": 32, "epochs": 30, "lr": 0.003, "w0": 1.0, "device": "cpu"},
    },
    "hisso": {"enabled": True, "window": 32, "batch_episodes": 32, "updates_per_epoch": 32,
              "primary_transform": "softmax", "transition_penalty": 0.001, "reward": "portfolio"},
    "data": {"loader": "psann.data.regime_market_dataset", "kwargs": {"steps": 1200, "assets": 4, "features": 8, "seed": 0,
                                                                         "signal_strength": 3.0}},
    "training": {"verbose": 0},
    "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.001},
}
# The current default of configs/sweeps/hisso_wave.yaml (hisso: max_t 60, grace 5, rf 3), scaled to
# the bench's epochs: grace = max_t / 12.
OLD_DEFAULT = {"rf": 3, "grace_fraction": 5 / 60}


# -- sweeps through the real code --------------------------------------------------------------


def write_sweep(folder: Path, name: str, *, seed: int, configs: int, epochs: int, scheduler: Any,
                concurrency: int, every_epochs: int = 5, search_space: dict[str, Any] | None = None) -> Path:
    """A sweep file (and its run.yaml) in ``folder``: one stage ``bench``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.yaml").write_text(yaml.safe_dump(RUN_CONFIG, sort_keys=False))
    sweep = {
        "name": name,
        "base_config": "run.yaml",
        "seed": seed,
        "search": "random",
        "rank_window": RANK_WINDOW,
        "top_k": 0,  # the bench measures training; the test evaluation of the winners is left out
        "report": {"every_epochs": every_epochs, "every_seconds": 120},
        "search_space": SEARCH_SPACE if search_space is None else search_space,
        "stages": [{"name": "bench", "resources": {"cpu": 1, "gpu": 0}, "num_samples": configs, "epochs": epochs,
                    "scheduler": scheduler, "max_concurrent_trials": concurrency, "max_failures": 0,
                    "pass_rule": {"min_success_fraction": 0.0}}],
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def _curve(trial_dir: Path) -> list[float]:
    """The trial's main-phase val_loss per epoch, from its events.csv."""
    with open(trial_dir / "events.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["event"] == "epoch" and r["phase"] in MAIN_PHASES]
    return [float(r["val_loss"]) if r["val_loss"] not in ("", None) else math.nan for r in rows]


def _last_result(trial_dir: Path) -> dict[str, Any]:
    lines = (trial_dir / "result.json").read_text().strip().splitlines() if (trial_dir / "result.json").exists() else []
    return json.loads(lines[-1]) if lines else {}


def run_sweep_file(path: Path) -> dict[str, Any]:
    """Run the sweep file's stage; per-trial facts in generation order, the ranked configurations."""
    from sweeps.spec import load_sweep
    from sweeps.stages import run_sweep

    spec = load_sweep(path)
    out = path.parent / "out"
    started = time.perf_counter()
    (result,) = run_sweep(spec, out, verbose=0)
    wall = time.perf_counter() - started
    trials = []
    for trial in result.trials:  # sorted by trial_id = Tune's generation order
        folder = out / "bench" / trial.trial_dir
        metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
        last = _last_result(folder)
        trials.append({
            "trial_id": trial.trial_id, "config_id": trial.config_id, "outcome": trial.outcome,
            "params": {k.rsplit(".", 1)[-1]: v for k, v in trial.params.items()},
            "epochs": int(last.get("epoch", 0)), "reports": int(last.get("training_iteration", 0)),
            "val_loss_smoothed": trial.val_loss_smoothed, "compute_s": metrics.get("duration_seconds"),
            "curve": _curve(folder) if (folder / "events.csv").exists() else [],
        })
    best = result.best()
    ranked = [c["config_id"] for c in result.configurations()]
    return {"wall_s": wall, "trials": trials, "ranked_configs": ranked,
            "winner": None if best is None else {"trial_id": best.trial_id, "config_id": best.config_id,
                                                 "outcome": best.outcome, "val_loss_smoothed": best.val_loss_smoothed}}


# -- ASHA simulated on the full sweep's curves ---------------------------------------------------


def ray_rungs(max_t: int, grace: int, rf: int) -> list[int]:
    """The milestones of Ray's ASHA bracket (ray.tune.schedulers.async_hyperband._Bracket)."""
    count = int(math.log(max_t / grace) / math.log(rf) + 1)
    return [grace * rf**k for k in range(count)]


def _cutoff(recorded: list[float], rf: int) -> float | None:
    import numpy as np

    return float(np.nanpercentile(recorded, (1 - 1 / rf) * 100)) if recorded else None


def simulate_asha(curves: Sequence[Sequence[float]], *, max_t: int, grace: int, rf: int, rung_window: int,
                  concurrency: int = 1) -> list[int]:
    """Epochs each trial runs under Ray's ASHA (time_attr epoch, mode min), trials started in order.

    A trial is stopped at a rung when minus its rung metric (the mean val_loss of its last
    ``rung_window`` epochs) is below the (1 - 1/rf) percentile of the values recorded there before
    it, as in Ray. Concurrency 1 is exact for seeded runs; above 1 every epoch is taken to last the
    same time and ties go to the earlier trial (the real order depends on timing).
    """
    rungs = [m for m in ray_rungs(max_t, grace, rf) if m < max_t]
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    epochs = [max_t] * len(curves)
    # Event simulation: (time, trial) of each epoch's end; a trial starts when a slot frees.
    running: dict[int, tuple[int, int]] = {}  # trial -> (start time, epochs done)
    queue = list(range(len(curves)))
    now = 0
    while queue or running:
        while queue and len(running) < concurrency:
            running[queue.pop(0)] = (now, 0)
        now += 1
        for trial in sorted(running):
            start, done = running[trial]
            done += 1
            running[trial] = (start, done)
            stop = done >= max_t
            if done in recorded:
                metric = smoothed_loss(curves[trial][:done], rung_window)
                reward = -metric if metric is not None else -math.inf  # the trainable reports inf
                cut = _cutoff(recorded[done], rf)
                if cut is not None and reward < cut:
                    stop = True
                recorded[done].append(reward)
            if stop:
                epochs[trial] = done
                del running[trial]
    return epochs


def judge(curves: Sequence[Sequence[float]], config_ids: Sequence[str], epochs: Sequence[int],
          ranked: Sequence[str], max_t: int, full_values: dict[str, float] | None = None) -> dict[str, Any]:
    """ASHA's winner by the ranking rule (pruned included) and its rank in the full sweep."""
    values = [(smoothed_loss(c[:e], RANK_WINDOW), i) for i, (c, e) in enumerate(zip(curves, epochs))]
    values = [(v, i) for v, i in values if v is not None]
    winner = min(values)[1] if values else None
    rank = ranked.index(config_ids[winner]) + 1 if winner is not None and config_ids[winner] in ranked else None
    spent, full_epochs = sum(epochs), max_t * len(epochs)
    gap = None
    if full_values and rank is not None:
        best = full_values[ranked[0]]
        gap = (full_values[config_ids[winner]] - best) / abs(best) if best else None
    return {"winner": winner, "winner_rank": rank, "gap": gap, "winner_pruned": winner is not None and epochs[winner] < max_t,
            "epochs": spent, "fraction": spent / full_epochs, "survivors": sum(1 for e in epochs if e >= max_t),
            "ok": rank is not None and rank <= TOP and spent / full_epochs <= TARGET_FRACTION}


def sweep_settings(epochs: int, configs: int) -> list[dict[str, Any]]:
    graces = sorted({g for g in (1, 2, 3, round(epochs / 12), round(epochs / 8), round(epochs / 6), round(epochs / 5),
                                 round(epochs / 4), round(epochs / 3)) if 1 <= g < epochs})
    sizes = sorted({n for n in (configs // 2, (3 * configs) // 4, configs) if n >= 4})
    return [{"rf": rf, "grace": g, "rung_window": w, "n": n}
            for rf in (2, 3, 4) for g in graces for w in (RANK_WINDOW, 1) for n in sizes]


def simulate_all(full: dict[int, dict[str, Any]], epochs: int, configs: int, cores: int) -> list[dict[str, Any]]:
    rows = []
    for setting in sweep_settings(epochs, configs):
        row = dict(setting)
        for conc in sorted({1, cores}):
            per_seed = {}
            for seed, sweep in full.items():
                trials = sweep["trials"][: setting["n"]]
                curves = [t["curve"] for t in trials]
                ids = [t["config_id"] for t in trials]
                # Judged against the full sweep over the same n configurations.
                ranked = [c for c in sweep["ranked_configs"] if c in set(ids)]
                run = simulate_asha(curves, max_t=epochs, grace=setting["grace"], rf=setting["rf"],
                                    rung_window=setting["rung_window"], concurrency=conc)
                values = {t["config_id"]: t["val_loss_smoothed"] for t in trials}
                per_seed[seed] = judge(curves, ids, run, ranked, epochs, values)
            row[f"c{conc}"] = per_seed
        rows.append(row)
    return rows


def _passes(row: dict[str, Any], conc: int) -> bool:
    return all(r["ok"] for r in row[f"c{conc}"].values())


def _max_fraction(row: dict[str, Any], conc: int) -> float:
    return max(r["fraction"] for r in row[f"c{conc}"].values())


def _worst_gap(row: dict[str, Any], conc: int = 1) -> float:
    """How much worse (relative, on the worst seed) ASHA's winner did in the full sweep than its best."""
    return max(math.inf if r["gap"] is None else r["gap"] for r in row[f"c{conc}"].values())


def pareto(rows: list[dict[str, Any]], configs: int) -> list[dict[str, Any]]:
    """The settings (all configurations, smoothed rung metric, concurrency 1) that no other setting
    beats on both the worst-seed epoch share and the worst-seed gap, cheapest first."""
    full_n = [r for r in rows if r["n"] == configs and r["rung_window"] == RANK_WINDOW]
    front = [r for r in full_n if not any(
        (_max_fraction(o, 1), _worst_gap(o)) < (_max_fraction(r, 1), _worst_gap(r))
        and _max_fraction(o, 1) <= _max_fraction(r, 1) and _worst_gap(o) <= _worst_gap(r) for o in full_n)]
    return sorted(front, key=lambda r: (_max_fraction(r, 1), _worst_gap(r)))


def choose(rows: list[dict[str, Any]], configs: int, cores: int) -> dict[str, Any]:
    """The setting to recommend: passes on every seed at concurrency 1 (and, if any do, at
    --cores too) with every configuration; among those the one that spends least. Without a
    passing setting: the trade-off, the setting of the Pareto front (epochs vs the worst-seed gap)
    with the smallest worst-seed gap among those spending <= TRADEOFF_FRACTION."""
    full_n = [r for r in rows if r["n"] == configs and r["rung_window"] == RANK_WINDOW]
    passing = [r for r in full_n if _passes(r, 1)]
    both = [r for r in passing if _passes(r, cores)]
    pool = both or passing
    if pool:
        return min(pool, key=lambda r: (_max_fraction(r, 1), r["rf"], -r["grace"]))
    front = pareto(rows, configs)
    fitting = [r for r in front if _max_fraction(r, 1) <= TRADEOFF_FRACTION] or front
    return min(fitting, key=lambda r: (_worst_gap(r), _max_fraction(r, 1)))


def within_budget(rows: list[dict[str, Any]], configs: int) -> dict[str, Any] | None:
    """The best setting that keeps to the epoch target on every seed (smallest worst-seed gap), if any."""
    full_n = [r for r in rows if r["n"] == configs and r["rung_window"] == RANK_WINDOW]
    fitting = [r for r in full_n if _max_fraction(r, 1) <= TARGET_FRACTION]
    return min(fitting, key=lambda r: (_worst_gap(r), _max_fraction(r, 1))) if fitting else None


# -- reporting cost --------------------------------------------------------------------------------


def _alone_child(run_dir: str, epochs: int, seed: int) -> int:
    """The body of run_alone's subprocess: one run, one torch thread; prints its metrics as JSON."""
    import torch

    from psann.runconfig import apply_overrides, parse_run_config
    from psann.runs import execute_run

    torch.set_num_threads(1)  # the one thread a Ray trial with cpu: 1 gets
    raw = apply_overrides(RUN_CONFIG, {"estimator.params.epochs": epochs})
    result = execute_run(parse_run_config(raw), Path(run_dir), seed=seed)
    print(json.dumps({"duration_s": result.metrics["duration_seconds"], "val_loss": result.metrics.get("val_loss")}))
    return 0


def run_alone(work: Path, epochs: int, seed: int, tag: str) -> dict[str, Any]:
    """The run alone, in a fresh process like a trial's worker (so both pay the same first-run warm-up)."""
    import subprocess

    run_dir = work / tag
    run_dir.mkdir(parents=True)
    out = subprocess.run([sys.executable, __file__, "--alone-child", str(run_dir), str(epochs), str(seed)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_in_trial(work: Path, epochs: int, seed: int, every_epochs: int, tag: str) -> dict[str, Any]:
    path = write_sweep(work / tag, tag, seed=seed, configs=1, epochs=epochs, scheduler="none", concurrency=1,
                       every_epochs=every_epochs, search_space={})
    sweep = run_sweep_file(path)
    (trial,) = sweep["trials"]
    metrics = json.loads((path.parent / "out" / "bench" / trial["trial_id"] / "metrics.json").read_text())
    return {"duration_s": trial["compute_s"], "reports": trial["reports"], "val_loss": metrics.get("val_loss"),
            "stage_wall_s": sweep["wall_s"]}


def measure_cost(work: Path, epochs: int, seed: int, pairs: int, cadences: Sequence[int]) -> dict[str, Any]:
    rounds = []
    for r in range(pairs):
        order = list(cadences[r % len(cadences):]) + list(cadences[: r % len(cadences)])  # rotate the order
        alone = run_alone(work / "alone", epochs, seed, f"round{r}")
        entry: dict[str, Any] = {"round": r, "alone_s": alone["duration_s"], "trials": {}}
        for cadence in order:
            trial = run_in_trial(work / "trial", epochs, seed, cadence, f"r{r}_every{cadence}")
            trial["ratio"] = trial["duration_s"] / alone["duration_s"]
            trial["same_val_loss"] = trial["val_loss"] == alone["val_loss"]
            entry["trials"][cadence] = trial
            print(f"  cost round {r}: alone {alone['duration_s']:.2f} s, in trial every {cadence} epochs "
                  f"{trial['duration_s']:.2f} s ({trial['ratio']:.2f}x, {trial['reports']} reports)", flush=True)
        rounds.append(entry)
    summary = {}
    for cadence in cadences:
        ratios = [e["trials"][cadence]["ratio"] for e in rounds]
        extra = [(e["trials"][cadence]["duration_s"] - e["alone_s"]) / max(1, e["trials"][cadence]["reports"]) for e in rounds]
        summary[cadence] = {"median_ratio": statistics.median(ratios), "ratios": ratios,
                            "median_s_per_report": statistics.median(extra),
                            "reports": rounds[0]["trials"][cadence]["reports"]}
    return {"rounds": rounds, "summary": summary, "alone_median_s": statistics.median(e["alone_s"] for e in rounds)}


# -- the report --------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def _rank_text(result: dict[str, Any]) -> str:
    """The winner's rank in the full sweep and how much worse its full-sweep value is than the best."""
    gap = result.get("gap")
    return f"{result['winner_rank']}" + ("" if not gap else f" (+{gap:.0%})")


def _setting_text(s: dict[str, Any]) -> str:
    return f"rf {s['rf']}, grace {s['grace']}"


def render(fig: dict[str, Any]) -> str:
    seeds = fig["seeds"]
    lines = [
        "# Sweep overhead (bench/sweep_overhead.py)",
        "",
        f"{fig['date_utc']}, {fig['machine']}, mode {fig['mode']}, local Ray with {fig['cores']} CPUs; "
        f"load average {fig['load_average_before_after'][0]:.1f} before / {fig['load_average_before_after'][1]:.1f} after "
        "(the cores are shared with other jobs: compare ratios measured side by side, not absolute times).",
        f"Trials: dense PSANN HISSO (2 x 32, window 32, 32 episodes x {RUN_CONFIG['hisso']['updates_per_epoch']} updates "
        f"per epoch) on regime_market_dataset(1200 steps, signal_strength 3), {fig['epochs']} epochs, 1 CPU each; seeded "
        f"random search over lr loguniform[2e-4, 5e-3] x w0 loguniform[0.5, 10]; rank_window {RANK_WINDOW}; report every 5 epochs or "
        "120 s (ASHA rungs always reported).",
        "",
    ]
    if fig.get("quality"):
        q = fig["quality"]
        lines += ["## ASHA against the full sweep", "",
                  f"Target: ASHA's winner (ranking rule, pruned included) among the full sweep's top {TOP} "
                  f"configurations on every seed, spending <= {TARGET_FRACTION:.0%} of its epochs.", ""]
        rows = []
        for seed in seeds:
            full = q["full"][str(seed)]
            top = full["ranked_configs"][:3]
            rows.append([seed, len(full["trials"]), full["epochs"], f"{full['wall_s']:.0f}", _fmt(full["efficiency"]),
                         ", ".join(top), _fmt(full["best_value"], ".5f")])
        lines += ["### Full sweeps (no scheduler)", "",
                  *_table(["seed", "configs", "epochs", "wall s", "scheduling efficiency", "top 3 configs",
                           "best val_loss_smoothed"], rows), ""]
        if q.get("real"):
            rows = []
            for entry in q["real"]:
                rows.append([entry["label"], entry["seed"], entry["concurrency"], entry["epochs"],
                             f"{entry['fraction']:.0%}", entry["pruned"], entry["winner"]["config_id"],
                             entry["winner"]["outcome"].lower(), _rank_text(entry),
                             _fmt(entry["winner"]["val_loss_smoothed"], ".5f"),
                             "same" if entry.get("matches_simulation") else f"differs ({entry.get('simulated_epochs')})",
                             _fmt(entry.get("max_curve_difference"), ".1e"),
                             "**yes**" if entry["ok"] else "no"])
            lines += ["### Real ASHA stages (run_sweep, same sweep file and seed)", "",
                      *_table(["setting", "seed", "concurrency", "epochs", "of full", "pruned", "winner",
                               "winner was", "its rank in full", "winner val_loss_smoothed",
                               "epochs per trial vs simulation", "max |val_loss - full's|", "passes"], rows), ""]
        rows = []
        for row in q["simulated"]:
            if row["n"] != fig["configs"]:
                continue
            cells = [row["rf"], row["grace"], "smoothed(3)" if row["rung_window"] == RANK_WINDOW else "raw"]
            for conc in sorted({1, fig["cores"]}):
                per = row[f"c{conc}"]
                cells.append(" / ".join(_rank_text(per[str(s)]) for s in seeds))
                cells.append(" / ".join(f"{per[str(s)]['fraction']:.0%}" for s in seeds))
                cells.append("**yes**" if all(per[str(s)]["ok"] for s in seeds) else "no")
            rows.append(cells)
        header = ["rf", "grace", "rung metric"]
        for conc in sorted({1, fig["cores"]}):
            header += [f"c={conc}: winner's rank in full (seeds {'/'.join(map(str, seeds))})", f"c={conc}: epochs", f"c={conc}: passes"]
        lines += [f"### Simulated ASHA on the full sweeps' curves, all {fig['configs']} configurations", "",
                  "Ray's rule replayed on the full sweeps' per-epoch val_loss: exact at concurrency 1 (seeded runs "
                  f"repeat their curves, checked above); at concurrency {fig['cores']} approximate (equal epoch times).",
                  "", *_table(header, rows), ""]
        rows = []
        for row in q["simulated"]:
            if row["n"] == fig["configs"] or row["rung_window"] != RANK_WINDOW:
                continue
            per = row["c1"]
            rows.append([row["n"], row["rf"], row["grace"], " / ".join(_rank_text(per[str(s)]) for s in seeds),
                         " / ".join(f"{per[str(s)]['fraction']:.0%}" for s in seeds),
                         "**yes**" if all(per[str(s)]["ok"] for s in seeds) else "no"])
        if rows:
            lines += ["### Fewer configurations (the first n of the same seeded samples, judged against the full sweep over those n), concurrency 1", "",
                      *_table(["n", "rf", "grace", "winner's rank", "epochs", "passes"], rows), ""]
        if q.get("pareto"):
            lines += ["### The trade-off: settings no other beats on both epochs and the winner's loss (concurrency 1, worst seed)", "",
                      *_table(["rf", "grace", "epochs (worst seed)", "winner's rank (per seed)",
                               "winner's full-sweep value vs the best (worst seed)"],
                              [[p["rf"], p["grace"], f"{p['max_fraction']:.0%}", " / ".join(map(str, p["ranks"])),
                                f"+{p['worst_gap']:.0%}"] for p in q["pareto"]]), ""]
        chosen = q["chosen"]
        lines += [f"Chosen setting: **reduction_factor {chosen['rf']}, grace_period {chosen['grace']} of max_t "
                  f"{fig['epochs']}** (grace = {chosen['grace'] / fig['epochs']:.3g} x max_t), rung metric "
                  f"val_loss_smoothed; passes on every seed: {'yes' if chosen['passes'] else 'no'}"
                  + ("." if chosen["passes"] else f" (no setting does: the trade-off with the smallest worst-seed loss "
                     f"within {TRADEOFF_FRACTION:.0%} of the epochs)."), ""]
    if fig.get("cost"):
        c = fig["cost"]
        cads = list(c["summary"])
        rows = []
        for entry in c["rounds"]:
            rows.append([entry["round"], f"{entry['alone_s']:.2f}",
                         *(f"{entry['trials'][k]['duration_s']:.2f} ({entry['trials'][k]['ratio']:.2f}x)" for k in cads)])
        lines += ["## Reporting cost: the same run alone and inside a 1-trial sweep stage, interleaved", "",
                  f"Run duration (metrics.json duration_seconds) of the same {fig['epochs']}-epoch run, same seed; "
                  f"target <= {COST_TARGET}x. Median alone: {c['alone_median_s']:.2f} s "
                  f"({c['alone_median_s'] / fig['epochs']:.3f} s per epoch).", "",
                  *_table(["round", "alone s", *(f"in trial, every {k} epochs" for k in cads)], rows), "",
                  *_table(["cadence", "reports", "median ratio", "s per report (median)", "meets 1.15x"],
                          [[f"every {k} epochs", c["summary"][k]["reports"], f"{c['summary'][k]['median_ratio']:.3f}",
                            f"{c['summary'][k]['median_s_per_report']:.3f}",
                            "**yes**" if c["summary"][k]["median_ratio"] <= COST_TARGET else "no"] for k in cads]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--alone-child"]:
        return _alone_child(argv[1], int(argv[2]), int(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 configs x 12 epochs, 2 cost rounds: a smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sweep seeds (search and runs)")
    parser.add_argument("--configs", type=int, default=None, help="sampled configurations per sweep (default 16)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial = ASHA max_t (default 30)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--asha-concurrency", type=int, default=1,
                        help="max_concurrent_trials of the real ASHA stages (default 1: reproducible decisions)")
    parser.add_argument("--asha", action="append", default=None, metavar="RF:GRACE",
                        help="real ASHA settings to run (default: the chosen one and the current default)")
    parser.add_argument("--pairs", type=int, default=None, help="cost rounds (default 3)")
    parser.add_argument("--cadences", type=int, nargs="+", default=[1, 5, 10], help="report every N epochs, compared")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--report", type=Path, default=None,
                        help="report path (default bench/reports/sweep_overhead.md, --quick: sweep_overhead_quick.md)")
    args = parser.parse_args(argv)
    configs = args.configs or (8 if args.quick else 16)
    epochs = args.epochs or (12 if args.quick else 30)
    pairs = args.pairs or (2 if args.quick else 3)
    cadences = args.cadences if not args.quick or args.cadences != [1, 5, 10] else [1, 5]
    report = args.report or ROOT / "bench" / "reports" / ("sweep_overhead_quick.md" if args.quick else "sweep_overhead.md")

    import ray

    work = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    load_before = os.getloadavg()
    fig: dict[str, Any] = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, Ray {ray.__version__}",
        "mode": "quick" if args.quick else "full", "cores": args.cores, "seeds": args.seeds, "configs": configs,
        "epochs": epochs,
    }
    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
    try:
        if not args.skip_quality:
            fig["quality"] = quality(work, args, configs, epochs)
        if not args.skip_cost:
            print("reporting cost:", flush=True)
            fig["cost"] = measure_cost(work / "cost", epochs, args.seeds[0], pairs, cadences)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    fig["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    fig["bench_wall_s"] = round(time.perf_counter() - started, 1)
    text = render(fig)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text + f"\nBench wall time: {fig['bench_wall_s']:.0f} s.\n")
    report.with_suffix(".json").write_text(json.dumps(fig, indent=1, default=str) + "\n")
    print(text)
    print(f"report: {report}")
    return 0


def quality(work: Path, args: argparse.Namespace, configs: int, epochs: int) -> dict[str, Any]:
    full: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        path = write_sweep(work / f"full_s{seed}", f"full_s{seed}", seed=seed, configs=configs, epochs=epochs,
                           scheduler="none", concurrency=args.cores)
        sweep = run_sweep_file(path)
        compute = sum(t["compute_s"] or 0.0 for t in sweep["trials"])
        sweep["epochs"] = sum(t["epochs"] for t in sweep["trials"])
        sweep["efficiency"] = compute / (sweep["wall_s"] * args.cores)
        best = sweep["winner"]
        sweep["best_value"] = best["val_loss_smoothed"] if best else None
        full[seed] = sweep
        print(f"F. full sweep seed {seed}: wall {sweep['wall_s']:.1f} s, efficiency {sweep['efficiency']:.3f}, "
              f"top {sweep['ranked_configs'][:TOP]}", flush=True)
    rows = simulate_all(full, epochs, configs, args.cores)
    chosen_row = choose(rows, configs, args.cores)
    chosen = {"rf": chosen_row["rf"], "grace": chosen_row["grace"], "passes": _passes(chosen_row, 1)}
    budget_row = within_budget(rows, configs)
    budget = None if budget_row is None else {"rf": budget_row["rf"], "grace": budget_row["grace"]}
    print(f"S. simulated {len(rows)} settings; chosen {_setting_text(chosen)} (passes: {chosen['passes']}); "
          f"best within {TARGET_FRACTION:.0%}: {_setting_text(budget) if budget else 'none fits'}", flush=True)
    old = {"rf": OLD_DEFAULT["rf"], "grace": max(1, round(epochs * OLD_DEFAULT["grace_fraction"]))}
    settings = []
    if args.asha:
        for text in args.asha:
            rf, grace = (int(x) for x in text.split(":"))
            settings.append((f"rf {rf}, grace {grace}", {"rf": rf, "grace": grace}))
    else:
        settings.append((f"chosen: rf {chosen['rf']}, grace {chosen['grace']}", chosen))
        if not chosen["passes"] and budget and (budget["rf"], budget["grace"]) != (chosen["rf"], chosen["grace"]):
            settings.append((f"best within {TARGET_FRACTION:.0%}: rf {budget['rf']}, grace {budget['grace']}", budget))
        if (old["rf"], old["grace"]) not in {(s["rf"], s["grace"]) for _, s in settings}:
            settings.append((f"current default: rf {old['rf']}, grace {old['grace']}", old))
    real = []
    for label, setting in settings:
        for seed in args.seeds:
            scheduler = {"type": "asha", "max_t": epochs, "grace_period": setting["grace"],
                         "reduction_factor": setting["rf"]}
            name = f"asha_rf{setting['rf']}_g{setting['grace']}_s{seed}"
            sweep = run_sweep_file(write_sweep(work / name, name, seed=seed, configs=configs, epochs=epochs,
                                               scheduler=scheduler, concurrency=args.asha_concurrency))
            ref = full[seed]
            ids_full = [t["config_id"] for t in ref["trials"]]
            ids = [t["config_id"] for t in sweep["trials"]]
            spent = sum(t["epochs"] for t in sweep["trials"])
            winner = sweep["winner"]
            rank = ref["ranked_configs"].index(winner["config_id"]) + 1 if winner and winner["config_id"] in ref["ranked_configs"] else None
            simulated = simulate_asha([t["curve"] for t in ref["trials"]], max_t=epochs, grace=setting["grace"],
                                      rf=setting["rf"], rung_window=RANK_WINDOW, concurrency=args.asha_concurrency)
            by_id = {t["config_id"]: t for t in ref["trials"]}
            diffs = [abs(a - b) for t in sweep["trials"] for a, b in zip(t["curve"], by_id.get(t["config_id"], {}).get("curve", []))]
            entry = {
                "label": label, "seed": seed, "concurrency": args.asha_concurrency, "rf": setting["rf"],
                "grace": setting["grace"], "epochs": spent, "fraction": spent / ref["epochs"],
                "pruned": sum(1 for t in sweep["trials"] if t["outcome"] == "PRUNED"), "winner": winner,
                "winner_rank": rank, "same_configs_as_full": ids == ids_full,
                "epochs_per_trial": [t["epochs"] for t in sweep["trials"]], "simulated_epochs": simulated,
                "matches_simulation": [t["epochs"] for t in sweep["trials"]] == simulated,
                "max_curve_difference": max(diffs) if diffs else None, "wall_s": sweep["wall_s"],
            }
            values = {t["config_id"]: t["val_loss_smoothed"] for t in ref["trials"]}
            best_value = values[ref["ranked_configs"][0]]
            entry["gap"] = (values[winner["config_id"]] - best_value) / abs(best_value) if rank and best_value else None
            entry["ok"] = rank is not None and rank <= TOP and entry["fraction"] <= TARGET_FRACTION
            real.append(entry)
            print(f"A. ASHA {label}, seed {seed}: {spent} epochs ({entry['fraction']:.0%}), winner rank {rank} "
                  f"({winner['outcome'] if winner else '-'}), same configs {entry['same_configs_as_full']}, "
                  f"matches simulation {entry['matches_simulation']}", flush=True)
    front = [{"rf": r["rf"], "grace": r["grace"], "max_fraction": _max_fraction(r, 1), "worst_gap": _worst_gap(r),
              "ranks": [r["c1"][s]["winner_rank"] for s in args.seeds]} for r in pareto(rows, configs)]
    return {"full": {str(k): v for k, v in full.items()}, "simulated": _stringify(rows), "chosen": chosen,
            "within_budget": budget, "pareto": front, "real": real}


def _stringify(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        out.append({k: ({str(s): v for s, v in val.items()} if isinstance(val, dict) else val) for k, val in row.items()})
    return out


if __name__ == "__main__":
    sys.exit(main())
