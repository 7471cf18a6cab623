"""Tiny run configs, sweep files and reward functions for the sweep tests.

Runs use the built-in toy market (300 steps) and a one-layer dense policy, so an epoch takes
milliseconds and a trial's cost is mostly Ray's own start-up. The reward functions below are
imported by Ray workers through their import path (``_sweep_helpers:offset_reward``), so the test
fixtures put this folder on PYTHONPATH before Ray starts.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch
import yaml

from psann.hisso.rewards import portfolio_reward

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

RUN_CONFIG: dict[str, Any] = {
    "estimator": {
        "target": "psann.PSANNRegressor",
        "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 3, "lr": 0.003, "w0": 1.0, "device": "cpu"},
    },
    "hisso": {
        "enabled": True,
        "window": 16,
        "batch_episodes": 4,
        "updates_per_epoch": 2,
        "primary_transform": "softmax",
        "transition_penalty": 0.001,
        "reward": "portfolio",
    },
    "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 300, "features": 4, "seed": 0}},
    "training": {"verbose": 0},
    "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.001},
}

SMOKE_STAGE: dict[str, Any] = {
    "name": "smoke",
    "resources": {"cpu": 1, "gpu": 0},
    "num_samples": 1,
    "epochs": 2,
    "scheduler": "none",
    "max_failures": 0,
    "pass_rule": {"min_success_fraction": 1.0},
}


def worker_env(extra: Iterable[str | os.PathLike] = ()) -> dict[str, str]:
    """os.environ with this folder (and ``extra``) on PYTHONPATH, for Ray workers and subprocesses."""
    env = dict(os.environ)
    paths = [str(HERE), str(ROOT), *map(str, extra)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def write_run_config(folder: Path, **section_updates: Any) -> Path:
    """The tiny run config as YAML in ``folder``; ``section_updates`` replace whole sections."""
    config = copy.deepcopy(RUN_CONFIG)
    config.update(copy.deepcopy(section_updates))
    path = Path(folder) / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_sweep(
    folder: Path,
    stages: list[dict[str, Any]],
    *,
    search_space: dict[str, Any] | None = None,
    name: str = "tiny",
    hang_timeout_s: float = 600,
    filename: str = "sweep.yaml",
    **top: Any,
) -> Path:
    """A sweep file in ``folder`` over the tiny run config (written beside it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_run_config(folder)
    sweep = {
        "name": name,
        "base_config": "run.yaml",
        "seed": 7,
        "hang_timeout_s": hang_timeout_s,
        "search_space": search_space if search_space is not None else {"estimator.params.lr": {"loguniform": [0.001, 0.01]}},
        "stages": stages,
        # Tests count reports as epochs and evaluate only where they check the evaluation.
        "report": {"every_epochs": 1},
        "top_k": 0,
        **top,
    }
    path = folder / filename
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def stage(name: str, **fields: Any) -> dict[str, Any]:
    """A stage section: the smoke defaults with ``fields`` on top."""
    section = copy.deepcopy(SMOKE_STAGE)
    section["name"] = name
    section.update(fields)
    return section


def stage_status(sweep_dir: Path, stage_name: str) -> dict[str, Any]:
    return json.loads((Path(sweep_dir) / stage_name / "stage_status.json").read_text())


def trial_dirs(sweep_dir: Path, stage_name: str) -> list[Path]:
    """Trial folders of a stage (Tune names them by trial id: ``<exp>_<index>``)."""
    folder = Path(sweep_dir) / stage_name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and "_" in p.name and (p / "params.json").exists())


def epoch_rows(trial_dir: Path) -> list[int]:
    """Epoch numbers of the main-phase epoch rows of a trial's events.csv."""
    import csv

    with open(Path(trial_dir) / "events.csv", newline="") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle) if r["event"] == "epoch" and r["phase"] == "hisso"]


# --- rewards imported by Ray workers through their import path -----------------------------------


def offset_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward minus 1 per episode: a trial using it is clearly the worst on val_loss."""
    return portfolio_reward(actions, context, transition_penalty=transition_penalty) - 1.0


_CALLS = {"hanging": 0}
HANG_AFTER_CALLS = 4  # the updates and validation pass of the first epoch, then silence
HANG_PENALTY = 0.5  # only trials with a transition penalty this large hang


def hanging_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward; with transition_penalty >= HANG_PENALTY it never returns after
    HANG_AFTER_CALLS calls (a stuck trial). Each trial runs in its own actor process."""
    _CALLS["hanging"] += 1
    if float(transition_penalty) >= HANG_PENALTY and _CALLS["hanging"] > HANG_AFTER_CALLS:
        while True:
            time.sleep(1.0)
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


def slow_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, 0.2 s late: stretches a trial so a test can interrupt it mid-run."""
    time.sleep(0.2)
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


FLAKY_MARKER = "flaky_reward_failed_once"
_CALLS["flaky"] = 0


def flaky_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, except that its 7th call in a trial's first attempt raises (a crash
    in epoch 2 or 3). The marker lives in the trial's working directory, which a retry reuses."""
    _CALLS["flaky"] += 1
    if _CALLS["flaky"] == 7 and not os.path.exists(FLAKY_MARKER):
        Path(FLAKY_MARKER).write_text("failed once\n")
        raise RuntimeError("simulated crash of a trial (lost node)")
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


# --- trial faults: one reward per kind of failure, selected per trial through the search space ----
# Each fails on its FAULT_AFTER_CALLS + 1-th call in a trial (the first update of epoch 2: epoch 1
# is 2 updates and 1 validation call), so every faulty trial has reported one epoch first.

FAULT_AFTER_CALLS = 3


def _fault_due(name: str) -> bool:
    _CALLS[name] = _CALLS.get(name, 0) + 1
    return _CALLS[name] > FAULT_AFTER_CALLS


def raising_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, then an ordinary exception (error_kind ``exception``)."""
    if _fault_due("raising"):
        raise RuntimeError("simulated bug in a reward function")
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


def nan_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, then NaN rewards: the epoch loss is NaN (error_kind ``non_finite``)."""
    reward = portfolio_reward(actions, context, transition_penalty=transition_penalty)
    return reward * float("nan") if _fault_due("nan") else reward


def oom_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, then torch's out-of-memory error, as CUDA raises it (``out_of_memory``)."""
    if _fault_due("oom"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


def stuck_reward(actions: torch.Tensor, context: torch.Tensor, *, transition_penalty: float = 0.0) -> torch.Tensor:
    """The portfolio reward, then a call that never returns: the hang rule stops it (``hung``)."""
    if _fault_due("stuck"):
        while True:
            time.sleep(1.0)
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)


FAULT_REWARDS = {
    # reward named by the trial -> (its outcome, its error_kind)
    "portfolio": ("SUCCESS", None),
    "_sweep_helpers:raising_reward": ("ERROR", "exception"),
    "_sweep_helpers:nan_reward": ("ERROR", "non_finite"),
    "_sweep_helpers:oom_reward": ("ERROR", "out_of_memory"),
    "_sweep_helpers:stuck_reward": ("HUNG", "hung"),
}
