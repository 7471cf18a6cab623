"""A sweep on your own price data: the shipped sweep file's smoke stage trains on the shipped CSV.

Tune runs each trial in its own folder, so the base config's relative ``data.kwargs.path`` must have
been resolved (against the base config's folder) before the trials start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _sweep_helpers import ROOT, stage_status, trial_dirs
from psann.contract import SUCCESS
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep

pytestmark = pytest.mark.slow

SWEEP_FILE = ROOT / "configs" / "sweeps" / "prices_csv.yaml"
SHIPPED_CSV = ROOT / "docs" / "data" / "prices_small.csv"


def test_the_shipped_price_sweep_runs_its_smoke_stage_on_the_shipped_csv(local_ray, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither the sweep file's folder nor the repo
    spec = load_sweep(SWEEP_FILE)
    sweep_dir = tmp_path / "sweeps" / "prices"

    (result,) = run_sweep(spec, sweep_dir, stages=["smoke"], verbose=0)

    assert result.stage == "smoke"
    status = stage_status(sweep_dir, "smoke")
    assert status["passed"] is True
    assert [t["outcome"] for t in status["trials"]] == [SUCCESS, SUCCESS]
    folders = trial_dirs(sweep_dir, "smoke")
    assert len(folders) == 2
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "success" and metrics["epochs_run"] == 2
        assert metrics["portfolio"]["policy"]["cum_return"] is not None
        resolved = yaml.safe_load((folder / "config_resolved.yaml").read_text())
        assert resolved["data"]["loader"] == "psann.data.price_table_dataset"
        assert Path(resolved["data"]["kwargs"]["path"]) == SHIPPED_CSV.resolve()
        assert resolved["data"]["kwargs"]["lookback"] in (8, 16)
        assert resolved["data"]["kwargs"]["val_start"] == "2023-04-03"  # YAML's date, as plain text
        # top_k: 2 in the sweep file: both trials were evaluated on the test split, from their checkpoints.
        evaluation = json.loads((folder / "evaluation.json").read_text())
        assert evaluation["error"] is None and isinstance(evaluation["test_loss"], float)
