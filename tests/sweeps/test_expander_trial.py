"""A sweep whose search space varies an LSM expander setting runs each value as a trial."""

from __future__ import annotations

import json

import pytest

from _sweep_helpers import stage, trial_dirs, write_sweep
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep

pytestmark = pytest.mark.slow

SEARCH_SPACE = {
    # A nested key inside the expander mapping; the base config has no expander, so the override
    # creates it ({output_dim: N}) and lsm_lr gives it its own learning rate.
    "estimator.params.expander.output_dim": {"grid": [4, 12]},
    "estimator.params.lsm_lr": 0.01,
}


def test_a_sweep_over_an_expander_width_runs_one_trial_per_width(local_ray, tmp_path):
    path = write_sweep(tmp_path, [stage("smoke", num_samples=1, epochs=1)], search_space=SEARCH_SPACE)
    sweep_dir = tmp_path / "out" / "expander"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)
    assert [r.passed for r in results] == [True]
    widths = []
    for trial_dir in trial_dirs(sweep_dir, "smoke"):
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] == "success", metrics.get("error")
        saved = json.loads((trial_dir / "checkpoints" / "best" / "metadata.json").read_text())
        expander = saved["params"]["expander"]
        assert saved["fitted"]["dim_in"] == expander["output_dim"]  # the network took the expander's width
        assert saved["params"]["lsm_lr"] == 0.01
        widths.append(expander["output_dim"])
    assert sorted(widths) == [4, 12]
