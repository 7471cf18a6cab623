"""PNG plots for the compendium, drawn with matplotlib's Agg canvas (no pyplot state).

Output is byte-for-byte reproducible: fixed rc settings, sorted inputs, fixed PNG metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from psann.contract import ERROR, HUNG, INCOMPLETE, INTERRUPTED, PRUNED, RUNNING, SUCCESS

STATUS_COLORS = {
    SUCCESS: "#1f77b4", PRUNED: "#ff7f0e", ERROR: "#d62728", HUNG: "#9467bd",
    INCOMPLETE: "#7f7f7f", RUNNING: "#2ca02c", INTERRUPTED: "#8c564b",
}
PNG_METADATA = {"Software": "psann-sweeps compendium"}

# Start from matplotlib's defaults so a user's matplotlibrc cannot change the files.
_RC = {k: v for k, v in matplotlib.rcParamsDefault.items() if k not in ("backend", "backend_fallback")}
_RC.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.grid": True,
            "grid.alpha": 0.3, "path.simplify": False})


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", metadata=PNG_METADATA)
    tmp.replace(path)
    return path


def learning_curves(path: Path, stage: str, curves: list[dict[str, Any]]) -> Path:
    """val_loss per epoch, one line per trial, coloured by status; ASHA stops marked with x.

    `curves`: [{trial_id, status, epochs: [...], val_loss: [...]}] in drawing order.
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.5))
        ax = fig.add_subplot()
        seen: set[str] = set()
        for curve in curves:
            status = curve["status"]
            color = STATUS_COLORS.get(status, "#7f7f7f")
            label = status if status not in seen else None
            seen.add(status)
            ax.plot(curve["epochs"], curve["val_loss"], color=color, linewidth=1.0, alpha=0.8,
                    label=label, marker="o" if len(curve["epochs"]) == 1 else None, markersize=4)
            if status == PRUNED and curve["epochs"]:
                ax.plot(curve["epochs"][-1:], curve["val_loss"][-1:], marker="x", color=color,
                        markersize=8, linestyle="none",
                        label="stopped by ASHA" if "asha" not in seen else None)
                seen.add("asha")
        ax.set_xlabel("epoch")
        ax.set_ylabel("val_loss")
        ax.set_title(f"{stage}: val_loss per epoch ({len(curves)} trials)")
        if seen:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)


def reward_vs_turnover(path: Path, points: list[dict[str, Any]]) -> Path:
    """Scatter of reward_mean against the policy's turnover, one colour per stage."""
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.5, 4.5))
        ax = fig.add_subplot()
        stages = sorted({p["stage"] for p in points})
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
        for i, stage in enumerate(stages):
            mine = [p for p in points if p["stage"] == stage]
            ax.scatter([p["turnover"] for p in mine], [p["reward_mean"] for p in mine],
                       s=18, color=palette[i % len(palette)], label=stage, alpha=0.8)
        ax.set_xlabel("policy turnover (mean L1 change per step)")
        ax.set_ylabel("reward_mean (train episodes, best epoch)")
        ax.set_title(f"reward vs turnover ({len(points)} trials)")
        if stages:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")


def top_trials(path: Path, stage: str, curves: list[dict[str, Any]], window: int, metric: str) -> Path:
    """The top trials' val_loss per epoch (thin, dots) and its rolling mean over `window` (thick).

    `curves`: [{rank, trial_id, status, epochs, val_loss, smoothed}] best first; the rolling mean
    after each epoch is the value the ranking (and ASHA) saw then.
    """
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4.5))
        ax = fig.add_subplot()
        for i, curve in enumerate(curves):
            color = PALETTE[i % len(PALETTE)]
            ax.plot(curve["epochs"], curve["val_loss"], color=color, linewidth=0.8, alpha=0.45,
                    marker="o", markersize=3)
            smoothed = [(e, v) for e, v in zip(curve["epochs"], curve["smoothed"]) if v is not None]
            label = f"#{curve['rank']} {curve['trial_id']} ({curve['status'].lower()})"
            ax.plot([e for e, _ in smoothed], [v for _, v in smoothed], color=color, linewidth=2.0, label=label)
            if curve["status"] == PRUNED and smoothed:
                ax.plot([smoothed[-1][0]], [smoothed[-1][1]], marker="x", color=color, markersize=9,
                        linestyle="none")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("val_loss")
        ax.set_title(f"{stage}: top {len(curves)} by {metric} (thick: mean of last {window} epochs; "
                     f"thin: each epoch; x: stopped by ASHA)", fontsize=8)
        if curves:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)


def equity(path: Path, title: str, steps: list[int], series: dict[str, list[float]]) -> Path:
    """Wealth per step (1.0 before the first step) of the policy and the two baselines."""
    styles = {"policy": ("#1f77b4", "-", 1.6), "equal_weight": ("#7f7f7f", "--", 1.2),
              "best_buy_and_hold": ("#2ca02c", ":", 1.4)}
    labels = {"policy": "policy", "equal_weight": "equal weight", "best_buy_and_hold": "best buy-and-hold"}
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8, 4))
        ax = fig.add_subplot()
        ax.axhline(1.0, color="#000000", linewidth=0.6, alpha=0.5)
        for name in ("policy", "equal_weight", "best_buy_and_hold"):
            values = series.get(name)
            if values is None:
                continue
            color, style, width = styles[name]
            ax.plot(steps, values, color=color, linestyle=style, linewidth=width, label=labels[name])
        ax.set_xlabel("step")
        ax.set_ylabel("wealth (1.0 at the start)")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)


def parameter_importance(path: Path, stage: str, metric: str, effects: list[Any],
                         winner_trial_id: str | None) -> Path:
    """One scatter per swept parameter: the ranking metric (y) against its value (x).

    `effects`: ``_importance.ParameterEffect``; log x for log-kind parameters, categories at
    evenly spaced positions; the winner is ringed.
    """
    from ._importance import CATEGORICAL, LOG

    columns = min(3, max(1, len(effects)))
    rows = -(-len(effects) // columns)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(6.5, 3.6 * columns + 0.4), 3.2 * rows + 1.0))
        for i, effect in enumerate(effects):
            ax = fig.add_subplot(rows, columns, i + 1)
            if effect.kind == CATEGORICAL:
                categories = sorted({str(v) for v in effect.x})
                where = {c: k for k, c in enumerate(categories)}
                x = [where[str(v)] for v in effect.x]
                ax.set_xticks(range(len(categories)))
                ax.set_xticklabels([c if len(c) <= 12 else c[:11] + "…" for c in categories],
                                   rotation=30 if len(categories) > 3 else 0, fontsize=7)
            else:
                x = [float(v) for v in effect.x]
                if effect.kind == LOG:
                    ax.set_xscale("log")
            colors = [STATUS_COLORS.get(s, "#7f7f7f") for s in effect.statuses]
            ax.scatter(x, effect.y, s=14, c=colors, alpha=0.8, linewidths=0)
            for xi, yi, trial in zip(x, effect.y, effect.trial_ids):
                if trial == winner_trial_id:
                    ax.scatter([xi], [yi], s=80, facecolors="none", edgecolors="#d62728", linewidths=1.4)
            rho = "n/a" if effect.rho is None else f"{effect.rho:+.2f}"
            ax.set_title(f"{effect.name} (Spearman {rho})", fontsize=8)
            ax.tick_params(labelsize=7)
            if i % columns == 0:
                ax.set_ylabel(metric, fontsize=8)
        fig.suptitle(f"{stage}: {metric} against each swept parameter (ringed: the winner; "
                     f"blue: finished, orange: pruned)", fontsize=9)
        fig.tight_layout()
        return _save(fig, path)
