"""A sweep over a stateful model runs as trials on a real local Ray (one cluster for the module)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from _sweep_helpers import stage, stage_status, trial_dirs, write_sweep
from psann.contract import SUCCESS
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep

pytestmark = pytest.mark.slow


def test_sweep_over_a_stateful_model_runs_as_trials(local_ray, tmp_path):
    # The tiny HISSO run config's dense policy made stateful by the search space itself:
    # estimator.params.state.rho creates the state mapping, so each trial builds StateControllers.
    path = write_sweep(
        tmp_path,
        [stage("smoke", num_samples=1, epochs=2, max_concurrent_trials=2)],
        search_space={"estimator.params.state.rho": {"grid": [0.5, 0.9]}},
    )
    sweep_dir = tmp_path / "out" / "stateful"
    (result,) = run_sweep(load_sweep(path), sweep_dir, verbose=0)

    smoke = stage_status(sweep_dir, "smoke")
    assert smoke["passed"] is True
    assert [t["outcome"] for t in smoke["trials"]] == [SUCCESS, SUCCESS]
    rhos = set()
    for trial_dir in trial_dirs(sweep_dir, "smoke"):
        resolved = yaml.safe_load((trial_dir / "config_resolved.yaml").read_text())
        rhos.add(resolved["estimator"]["params"]["state"]["rho"])
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] == "success", metrics.get("error")
        with open(trial_dir / "events.csv", newline="") as handle:
            policies = [r["message"] for r in csv.DictReader(handle) if r["event"] == "shuffle_policy"]
        assert any("stateful=True" in p and "state_reset=episode" in p for p in policies), policies
        saved = json.loads((trial_dir / "checkpoints" / "best" / "metadata.json").read_text())
        assert saved["params"]["state"]["rho"] == resolved["estimator"]["params"]["state"]["rho"]
    assert rhos == {0.5, 0.9}
