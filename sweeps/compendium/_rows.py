"""The compendium's view of the tables: trial rows, their epoch series, and the ranking.

Every ranking here is the contract's (``psann.contract``): trials by ``rank_trials`` /
``best_trial`` (val_loss_smoothed, pruned trials included) and, when a stage ran repeats (several
runs sharing a config_id), configurations by ``rank_configurations`` (the mean of their runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from psann.contract import (
    RANK_METRIC,
    RANK_WINDOW,
    TRIAL_STATUSES,
    rank_configurations,
    rank_trials,
    smoothed_loss,
)

_STATUS_RANK = {s: i for i, s in enumerate(TRIAL_STATUSES)}


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sort_number(value: Any) -> float:
    return value if finite(value) else math.inf


def unranked_order(row: dict[str, Any]) -> tuple:
    return (_STATUS_RANK.get(row["status"], 99), str(row["trial_id"]), str(row.get("trial_dir")))


def epoch_series(events: pa.Table, rows: Sequence[dict[str, Any]]
                 ) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(stage, trial_id) -> [(epoch, val_loss)] of the trial's main phase, in logged order.

    val_loss values that are missing are left out; NaN and inf are kept (a diverged epoch).
    """
    epochs = events.filter(pc.equal(events["event"], "epoch")).select(
        ["stage", "trial_id", "phase", "epoch", "val_loss", "seq"]).sort_by(
        [("stage", "ascending"), ("trial_id", "ascending"), ("seq", "ascending")])
    by_trial: dict[tuple[str, str], list[tuple]] = {}
    for stage, trial, phase, epoch, val, _ in zip(*(epochs[c].to_pylist() for c in epochs.column_names)):
        by_trial.setdefault((stage, trial), []).append((phase, epoch, val))
    series = {}
    for r in rows:
        key = (r["stage"], r["trial_id"])
        points = [(e, v) for phase, e, v in by_trial.get(key, [])
                  if phase == r.get("main_phase") and e is not None and v is not None]
        if points:
            series[key] = points
    return series


def rank_window(rows: Sequence[dict[str, Any]]) -> int:
    """The window of val_loss_smoothed the rows were ranked with (the sweep file's rank_window)."""
    windows = sorted({r["rank_window"] for r in rows if isinstance(r.get("rank_window"), int)
                      and not isinstance(r.get("rank_window"), bool) and r["rank_window"] >= 1})
    return windows[-1] if windows else RANK_WINDOW


def fill_rank_metric(rows: list[dict[str, Any]],
                     series: dict[tuple[str, str], list[tuple[int, float]]]) -> bool:
    """Tables ingested before val_loss_smoothed existed: derive it from the events, as the contract does.

    Returns whether the rows lacked the column (then it was computed here).
    """
    if not rows or any(RANK_METRIC in r for r in rows):
        return False
    for r in rows:
        values = [v for _, v in series.get((r["stage"], r["trial_id"]), [])]
        r[RANK_METRIC] = smoothed_loss(values, rank_window([r]))
    return True


def smoothed_curve(values: Sequence[float], window: int) -> list[float | None]:
    """val_loss_smoothed as it stood after each epoch (what Tune, ASHA and the ranking saw)."""
    return [smoothed_loss(values[: i + 1], window) for i in range(len(values))]


def _config_key(row: dict[str, Any]) -> str:
    value = row.get("config_id")
    return f"config:{value}" if value is not None else f"trial:{row['stage']}/{row['trial_id']}"


def has_repeats(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether two of the rows are runs of one configuration (same config_id)."""
    keys = [_config_key(r) for r in rows if r.get("config_id") is not None]
    return len(keys) != len(set(keys))


@dataclass(frozen=True)
class Configuration:
    """A configuration and its runs; without repeats, one run."""

    config_id: str | None
    value: float  # the ranking value: the mean over ranked runs
    std: float | None  # population std over ranked runs; None without repeats
    runs: int  # ranked runs
    trials: tuple[dict[str, Any], ...]  # every run: ranked ones best first, then the others
    best: dict[str, Any]  # the best ranked run

    @property
    def label(self) -> str:
        return self.config_id if self.config_id is not None else str(self.best["trial_id"])


@dataclass(frozen=True)
class Standing:
    """The ranking of one stage's rows (or any rows of one stage)."""

    ranked: tuple[dict[str, Any], ...]  # ranked runs, best first (rank_trials)
    configurations: tuple[Configuration, ...]  # best first
    repeats: bool

    @property
    def winner(self) -> Configuration | None:
        return self.configurations[0] if self.configurations else None

    def trial_ranks(self) -> dict[int, int]:
        """id(row) -> the run's 1-based rank among ranked runs."""
        return {id(r): i for i, r in enumerate(self.ranked, start=1)}

    def display_order(self, rows: Sequence[dict[str, Any]]) -> list[tuple[int | None, dict[str, Any]]]:
        """(rank, row) for every row: by configuration rank (runs best first), then unranked rows."""
        out: list[tuple[int | None, dict[str, Any]]] = []
        seen: set[int] = set()
        for position, config in enumerate(self.configurations, start=1):
            for r in config.trials:
                out.append((position, r))
                seen.add(id(r))
        rest = sorted((r for r in rows if id(r) not in seen), key=unranked_order)
        return out + [(None, r) for r in rest]


def standing(rows: Sequence[dict[str, Any]]) -> Standing:
    """Rank the runs of one stage by the contract's rule; configurations when there are repeats."""
    ranked = rank_trials(rows)
    repeats = has_repeats(rows)
    if not repeats:
        configs = tuple(Configuration(config_id=r.get("config_id"), value=float(r[RANK_METRIC]), std=None,
                                      runs=1, trials=(r,), best=r) for r in ranked)
        return Standing(ranked=tuple(ranked), configurations=configs, repeats=False)
    position = {id(r): i for i, r in enumerate(ranked)}
    keyed = [{"config": _config_key(r), "status": r["status"], RANK_METRIC: r.get(RANK_METRIC), "index": i}
             for i, r in enumerate(rows)]
    configs = []
    for entry in rank_configurations(keyed, config_key="config"):
        members = [rows[k["index"]] for k in entry["trials"]]
        members.sort(key=lambda r: (position.get(id(r), len(ranked)), unranked_order(r)))
        best = members[0]
        configs.append(Configuration(config_id=best.get("config_id"), value=float(entry["value"]),
                                     std=float(entry["std"]), runs=int(entry["runs"]),
                                     trials=tuple(members), best=best))
    return Standing(ranked=tuple(ranked), configurations=tuple(configs), repeats=True)


def sweep_winner(standings: dict[str, Standing]) -> tuple[str, Configuration] | None:
    """(stage, configuration) of the best stage winner; a tie goes to the first stage by name.

    Without repeats this is ``best_trial`` over all the rows (its ties go by stage, then trial_id).
    """
    winners = [(s.winner.value, stage, s.winner) for stage, s in standings.items() if s.winner is not None]
    if not winners:
        return None
    value, stage, winner = min(winners, key=lambda w: w[:2])
    return stage, winner
