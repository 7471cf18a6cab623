"""A config written for the earlier psann CLI, over channels-first windows, through the CLI and a sweep.

The config has the earlier CLI's shape: WaveResNet with ``hidden_layers`` (its depth), an npz of
(N, 4, 128) channels-first X with y and prices (N, k), a supervised warm start, the reward as
``{target, kwargs}``, ``trans_cost: null``, ``mixed_precision`` with ``amp_dtype``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from _sweep_helpers import stage, stage_status, trial_dirs, worker_env
from psann.contract import EXIT_BAD_INPUT, EXIT_OK, SUCCESS
from psann.estimators import WaveResNetRegressor
from sweeps.spec import load_sweep
from sweeps.stages import run_sweep

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("metrics.json", "events.csv", "config_resolved.yaml", "checkpoints/best", "checkpoints/warm_start")
REWARD = {"target": "psann.hisso.rewards:portfolio_reward", "kwargs": {"transition_penalty": 0.005}}

EARLIER_CONFIG = {
    "estimator": {
        "target": "psann.WaveResNetRegressor",
        "params": {
            "hidden_layers": 2, "hidden_units": 16, "epochs": 2, "batch_size": 16, "lr": 0.0005,
            "random_state": 23, "device": "cpu", "preserve_shape": False, "data_format": "channels_first",
            "w0_warmup_epochs": 1,
        },
    },
    "hisso": {
        "enabled": True, "window": 16, "batch_episodes": 4, "updates_per_epoch": 2,
        "primary_transform": "softmax", "transition_penalty": 0.01, "trans_cost": None,
        "mixed_precision": False, "amp_dtype": "float16", "reward": REWARD,
        "supervised": {"y_key": "y_train", "epochs": 1, "batch_size": 16},
    },
    "data": {"npz": "windows.npz"},
    "training": {"verbose": 1},
    "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.001},
}


def _write_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 72), ("val", 32), ("test", 32)):
        arrays[f"X_{split}"] = rng.normal(size=(n, 4, 128)).astype(np.float32)
        arrays[f"y_{split}"] = rng.normal(size=(n, 2)).astype(np.float32)
        arrays[f"prices_{split}"] = np.cumprod(1 + 0.01 * rng.normal(size=(n, 2)), axis=0).astype(np.float32)
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def earlier_config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("earlier")
    _write_npz(folder / "windows.npz")
    path = folder / "wave_resnet_small.yaml"
    path.write_text(yaml.safe_dump(EARLIER_CONFIG, sort_keys=False))
    return path


def _cli(*args):
    env = {**worker_env(), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "psann.scripts.hisso_log_run", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _check_run_folder(run_dir: Path) -> dict:
    for name in RUN_FILES:
        assert (run_dir / name).exists(), f"{run_dir} lacks {name}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "success"
    assert metrics["reward"] == "psann.hisso.rewards:portfolio_reward(transition_penalty=0.005)"
    resolved = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    assert resolved["estimator"]["params"]["depth"] == 2 and "hidden_layers" not in resolved["estimator"]["params"]
    assert resolved["hisso"]["reward"] == REWARD
    best = WaveResNetRegressor.load(run_dir / "checkpoints" / "best")
    assert best.input_shape_ == (4, 128) and best.hisso_["reward_spec"] == REWARD
    return metrics


def test_an_earlier_cli_config_runs_through_the_cli(earlier_config, tmp_path):
    result = _cli("--config", earlier_config, "--output-dir", tmp_path, "--run-name", "earlier")
    assert result.returncode == EXIT_OK, result.stderr[-3000:]
    assert "'hidden_layers' is deprecated, use 'depth'" in result.stderr
    metrics = _check_run_folder(tmp_path / "earlier")
    allocations = metrics["portfolio"]
    assert allocations is not None


def test_an_unsupported_earlier_cli_key_is_refused_with_exit_2_naming_it(earlier_config, tmp_path):
    config = yaml.safe_load(earlier_config.read_text())
    config["estimator"]["params"]["architecture"] = "wave"
    path = earlier_config.parent / "with_architecture.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _cli("--config", path, "--output-dir", tmp_path / "out", "--run-name", "refused")
    assert result.returncode == EXIT_BAD_INPUT
    assert "estimator.params.architecture: not supported" in result.stderr
    assert not (tmp_path / "out" / "refused").exists()


def test_an_earlier_cli_config_runs_as_a_sweep_trial(local_ray, earlier_config, tmp_path):
    sweep = {
        "name": "earlier",
        "base_config": str(earlier_config),
        "seed": 7,
        "search_space": {"estimator.params.lr": {"choice": [0.0005]}},
        "stages": [stage("smoke", num_samples=1, epochs=2)],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    sweep_dir = tmp_path / "out" / "earlier"
    run_sweep(load_sweep(path), sweep_dir, verbose=0)
    status = stage_status(sweep_dir, "smoke")
    assert [t["outcome"] for t in status["trials"]] == [SUCCESS]
    (trial_dir,) = trial_dirs(sweep_dir, "smoke")
    _check_run_folder(trial_dir)
    assert os.path.isdir(trial_dir / "checkpoints" / "best")
