"""PNG plots for the compendium, drawn with matplotlib's Agg canvas (no pyplot state).

Output is byte-for-byte reproducible: fixed rc settings, sorted inputs, fixed PNG metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
