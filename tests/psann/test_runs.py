"""psann.runs: one run's behaviour (failures, interrupts, checkpoints, seeds, process-local state).

Runs go through the CLI's ``main(argv)`` in-process (or a subprocess where process boundaries are
the point) with tiny configs written into tmp_path.
"""

import json
import logging
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch
import yaml

import psann
from psann._imports import TRUST_ENV, trust
from psann.hisso import call_reward, hisso_evaluate_reward, hisso_infer_series, resolve_reward
from psann.runconfig import parse_run_config
from psann.training import Callback
from psann.runs import execute_run, load_dataset, load_run_config, prepare_run_dir
from psann.scripts.hisso_log_run import main

REPO = Path(__file__).resolve().parents[2]

# Deterministic metrics (durations and throughputs are not).
DETERMINISTIC_KEYS = ("train_loss", "val_loss", "val_mse", "test_loss", "test_mse", "best_epoch", "epochs_run",
                      "reward_mean", "reward_std", "episodes", "seed", "portfolio")


def tiny_config(**sections):
    """A HISSO config that trains in well under a second on one CPU thread."""
    raw = {
        "estimator": {"target": "psann.PSANNRegressor",
                      "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 3, "w0": 1.0, "device": "cpu"}},
        "hisso": {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio",
                  "val_episodes": 8, "transition_penalty": 0.001},
        "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 120}},
        "training": {"verbose": 0},
    }
    for dotted, value in sections.items():
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def write_config(folder: Path, raw, name="tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def read_metrics(run_dir: Path):
    return json.loads((run_dir / "metrics.json").read_text())


def read_events(run_dir: Path):
    return pacsv.read_csv(run_dir / "events.csv").to_pylist()


def only_run(output_dir: Path) -> Path:
    runs = sorted(p for p in output_dir.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def write_module(folder: Path, source: str) -> str:
    """Write an importable module with a unique name into folder (on sys.path); return its name."""
    name = f"runs_test_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source)
    trust([name])  # a config may name it, as with --trust (module_dir restores PSANN_TRUST after)
    return name


RAISING_REWARD = """
from psann.hisso import portfolio_reward
CALLS = [0]
def reward(actions, context, transition_penalty=0.0):
    # Epoch 1 = 2 updates + 1 validation call; the first update of epoch 2 raises.
    CALLS[0] += 1
    if CALLS[0] > 3:
        raise {exception}
    return portfolio_reward(actions, context, transition_penalty=transition_penalty)
"""


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(TRUST_ENV, os.environ.get(TRUST_ENV, ""))  # restored after the test
    return folder


# -- failures -------------------------------------------------------------------------------------

def test_run_raising_mid_training_exits_1_with_traceback_error_event_and_resolved_config(tmp_path, module_dir):
    name = write_module(module_dir, RAISING_REWARD.format(exception='RuntimeError("reward exploded, at \\"epoch 2\\"")'))
    config = write_config(tmp_path, tiny_config(**{"hisso.reward": f"{name}:reward"}))

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 1

    run = only_run(tmp_path / "runs")
    metrics = read_metrics(run)
    assert metrics["status"] == "error"
    assert "Traceback (most recent call last)" in metrics["error"]
    assert 'RuntimeError: reward exploded, at "epoch 2"' in metrics["error"]
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 1  # epoch 1 finished and was recorded
    events = read_events(run)
    assert [e["event"] for e in events if e["event"] in ("epoch", "error")] == ["epoch", "error"]
    assert events[-1]["message"] == 'RuntimeError: reward exploded, at "epoch 2"'
    resolved = yaml.safe_load((run / "config_resolved.yaml").read_text())
    assert resolved["hisso"]["reward"] == f"{name}:reward"
    assert (run / "checkpoints" / "best" / "weights.pt").is_file()


def test_loader_that_crashes_is_a_failed_run_with_exit_1_not_a_lost_traceback(tmp_path, module_dir):
    name = write_module(module_dir, "def load(steps=10):\n    raise KeyError('price feed unavailable')\n")
    config = write_config(tmp_path, tiny_config(**{"data": {"loader": f"{name}.load", "kwargs": {}}}))

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 1

    run = only_run(tmp_path / "runs")
    metrics = read_metrics(run)
    assert metrics["status"] == "error"
    assert "KeyError: 'price feed unavailable'" in metrics["error"]
    assert read_events(run)[-1]["event"] == "error"
    assert (run / "config_resolved.yaml").is_file()


def test_keyboard_interrupt_mid_training_writes_status_interrupted_and_exits_130(tmp_path, module_dir):
    name = write_module(module_dir, RAISING_REWARD.format(exception="KeyboardInterrupt"))
    config = write_config(tmp_path, tiny_config(**{"hisso.reward": f"{name}:reward"}))

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 130

    run = only_run(tmp_path / "runs")
    metrics = read_metrics(run)
    assert metrics["status"] == "interrupted"
    assert metrics["epochs_run"] == 1
    events = read_events(run)
    assert events[-1]["event"] == "interrupted"
    assert sum(e["event"] == "epoch" for e in events) == 1
    assert (run / "config_resolved.yaml").is_file()


def test_execute_run_refuses_a_folder_that_already_holds_a_run(tmp_path):
    config = parse_run_config(tiny_config())
    run_dir = prepare_run_dir(tmp_path, "r")
    assert execute_run(config, run_dir, seed=1).status == "success"
    before = (run_dir / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError):
        execute_run(config, run_dir, seed=1)
    assert (run_dir / "metrics.json").read_bytes() == before


def test_metrics_json_is_a_running_snapshot_after_every_epoch_then_final(tmp_path):
    run_dir = prepare_run_dir(tmp_path, "r")
    snapshots = []

    class Peek(Callback):
        def on_epoch_end(self, loop, record):
            if record["phase"] == "hisso":
                snapshots.append(read_metrics(run_dir))

    result = execute_run(parse_run_config(tiny_config()), run_dir, seed=1, callbacks=[Peek()])
    assert [(m["status"], m["epochs_run"]) for m in snapshots] == [("running", 1), ("running", 2), ("running", 3)]
    assert all(m["test_loss"] is None and m["val_loss"] is not None for m in snapshots)
    final = read_metrics(run_dir)
    assert final == result.metrics | {"duration_seconds": final["duration_seconds"]}
    assert final["status"] == "success" and final["test_loss"] is not None


# -- best checkpoint -------------------------------------------------------------------------------

ADVERSARIAL_MARKET = """
import numpy as np
def trending_then_crashing(steps=96, seed=0):
    # Asset 0 rises 1% a step in train and falls 1% a step in val and test; asset 1 is flat; inputs are
    # noise. HISSO learns to hold asset 0 ever more, so val_loss gets worse every epoch: the best epoch
    # is the first, never the last.
    rng = np.random.default_rng(seed)
    n = steps // 3
    x = rng.normal(size=(3 * n, 2))
    t = np.arange(n)
    up, flat, down = 100 * 1.01 ** t, np.full(n, 100.0), 100 * 0.99 ** t
    return {"X_train": x[:n], "prices_train": np.c_[up, flat],
            "X_val": x[n:2 * n], "prices_val": np.c_[down, flat],
            "X_test": x[2 * n:], "prices_test": np.c_[down, flat]}
"""


def _val_loss(est, X_val, prices_val, options):
    """-mean reward over the validation episodes the trainer uses (hisso.val_episodes windows drawn
    with hisso.eval_seed, the same every epoch)."""
    window = options["window"]
    starts = torch.randint(0, X_val.shape[0] - window + 1, (options["val_episodes"],),
                           generator=torch.Generator().manual_seed(options["eval_seed"]))
    index = starts[:, None] + torch.arange(window)[None, :]
    actions = torch.as_tensor(hisso_infer_series(est, X_val))[index]
    context = torch.as_tensor(prices_val)[index]
    rewards = call_reward(resolve_reward(est.hisso_["reward"]).reward_fn, actions, context,
                          est.hisso_["transition_penalty"])
    return -float(rewards.mean())


def test_best_checkpoint_is_the_lowest_val_loss_epoch_not_the_last_and_reproduces_logged_losses(tmp_path, module_dir):
    name = write_module(module_dir, ADVERSARIAL_MARKET)
    raw = tiny_config(**{"estimator.params.epochs": 4, "estimator.params.lr": 0.01, "hisso.updates_per_epoch": 4,
                         "hisso.val_episodes": 16, "hisso.transition_penalty": 0.0,
                         "data": {"loader": f"{name}.trending_then_crashing", "kwargs": {"steps": 96}}})
    config = write_config(tmp_path, raw)

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--keep-checkpoints"]) == 0

    run = only_run(tmp_path / "runs")
    metrics = read_metrics(run)
    epochs = [e for e in read_events(run) if e["event"] == "epoch"]
    val_losses = {e["epoch"]: e["val_loss"] for e in epochs}
    lowest = min(val_losses, key=val_losses.get)
    assert metrics["best_epoch"] == lowest == 1
    assert metrics["epochs_run"] == 4 != metrics["best_epoch"]
    assert metrics["val_loss"] == val_losses[1]

    best_weights = torch.load(run / "checkpoints/best/weights.pt", weights_only=True)
    first = torch.load(run / "checkpoints/epoch_0001/weights.pt", weights_only=True)
    last = torch.load(run / "checkpoints/epoch_0004/weights.pt", weights_only=True)
    assert all(torch.equal(best_weights[k], first[k]) for k in best_weights)
    assert not all(torch.equal(best_weights[k], last[k]) for k in best_weights)

    est = psann.PSANNRegressor.load(run / "checkpoints" / "best")
    data = load_dataset(load_run_config(config))
    resolved = yaml.safe_load((run / "config_resolved.yaml").read_text())
    assert _val_loss(est, data["X_val"], data["prices_val"], resolved["hisso"]) == pytest.approx(metrics["val_loss"], abs=1e-6)
    score = hisso_evaluate_reward(est, data["X_test"], data["prices_test"], window=resolved["hisso"]["window"])
    assert -score["reward_window_mean"] == pytest.approx(metrics["test_loss"], abs=1e-6)


def test_wave_resnet_best_checkpoint_from_inside_the_w0_warmup_reproduces_test_loss(tmp_path):
    # Every epoch is inside the w0 warm-up (10 epochs), so the best one ran with a stem w0 below
    # first_layer_w0: the checkpoint must carry that w0, not the parameter's target value.
    raw = tiny_config(**{"estimator": {"target": "psann.WaveResNetRegressor",
                                       "params": {"hidden_units": 8, "depth": 1, "epochs": 3, "first_layer_w0": 3.0,
                                                  "w0_warmup_epochs": 10, "device": "cpu"}}})
    config = write_config(tmp_path, raw)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 0
    run = only_run(tmp_path / "runs")
    metrics = read_metrics(run)
    est = psann.WaveResNetRegressor.load(run / "checkpoints" / "best")
    data = load_dataset(load_run_config(config))
    assert est.model_.net.first_layer_w0 < 3.0
    score = hisso_evaluate_reward(est, data["X_test"], data["prices_test"], window=8)
    assert -score["reward_window_mean"] == pytest.approx(metrics["test_loss"], abs=1e-6)


# -- process-local state, seeds ---------------------------------------------------------------------

def _deterministic(metrics):
    return {key: metrics[key] for key in DETERMINISTIC_KEYS}


def test_two_runs_in_one_process_match_the_same_runs_in_separate_processes(tmp_path):
    config = write_config(tmp_path, tiny_config())
    in_process = {}
    for seed in ("1", "2"):
        assert main(["--config", str(config), "--output-dir", str(tmp_path / "inproc"), "--run-name", seed,
                     "--seed", seed]) == 0
        in_process[seed] = _deterministic(read_metrics(tmp_path / "inproc" / seed))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the in-process runs use one thread too (conftest)
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-m", "psann.scripts.hisso_log_run", "--config", str(config),
                        "--output-dir", str(tmp_path / "subproc"), "--run-name", seed, "--seed", seed],
                       cwd=REPO, env=env, check=True, capture_output=True)
        assert _deterministic(read_metrics(tmp_path / "subproc" / seed)) == in_process[seed]
    assert in_process["1"]["val_loss"] != in_process["2"]["val_loss"]  # the seed matters


def test_a_run_leaves_logger_handlers_and_global_rng_states_as_it_found_them(tmp_path):
    config = parse_run_config(tiny_config())
    logger = logging.getLogger("psann")
    handlers, level = list(logger.handlers), logger.level
    root_handlers = list(logging.getLogger().handlers)
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    torch_state, numpy_state, random_state = torch.get_rng_state(), np.random.get_state(), random.getstate()

    result = execute_run(config, prepare_run_dir(tmp_path, "r"), seed=3, console=True)

    assert result.status == "success"
    assert logger.handlers == handlers and logger.level == level
    assert logging.getLogger().handlers == root_handlers
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert random.getstate() == random_state
    # The run's DEBUG log went to its own file, not to handlers left behind.
    assert "DEBUG" in (result.run_dir / "run.log").read_text()


def test_random_state_in_the_config_wins_over_the_seed_flag(tmp_path):
    config = write_config(tmp_path, tiny_config(**{"estimator.params.random_state": 7}))
    for seed in ("3", "99"):
        assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", seed,
                     "--seed", seed]) == 0
    first, second = read_metrics(tmp_path / "runs" / "3"), read_metrics(tmp_path / "runs" / "99")
    assert first["seed"] == second["seed"] == 7
    assert _deterministic(first) == _deterministic(second)
    resolved = yaml.safe_load((tmp_path / "runs" / "3" / "config_resolved.yaml").read_text())
    assert resolved["estimator"]["params"]["random_state"] == 7


def test_without_random_state_the_seed_flag_is_the_effective_seed_and_fixes_the_metrics(tmp_path):
    config = write_config(tmp_path, tiny_config())
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", name,
                     "--seed", seed]) == 0
    a, b, c = (read_metrics(tmp_path / "runs" / name) for name in "abc")
    assert a["seed"] == b["seed"] == 5 and c["seed"] == 6
    assert _deterministic(a) == _deterministic(b)
    assert a["val_loss"] != c["val_loss"]
    resolved = yaml.safe_load((tmp_path / "runs" / "a" / "config_resolved.yaml").read_text())
    assert resolved["estimator"]["params"]["random_state"] == 5


def test_default_seed_is_42(tmp_path):
    config = write_config(tmp_path, tiny_config())
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", "r"]) == 0
    assert read_metrics(tmp_path / "runs" / "r")["seed"] == 42


# -- evaluation: the reward strategy's metrics ---------------------------------------------------------

CUSTOM_METRICS_STRATEGY = """
import numpy as np
from psann.hisso import RewardStrategy, portfolio_reward

def weight_metrics(allocations, prices, trans_cost):
    # One number the portfolio metrics do not have: how much the policy held of asset 0.
    return {"mean_weight_0": float(np.mean(allocations[:, 0])), "cost_seen": float(trans_cost)}

STRATEGY = RewardStrategy(name="weights", reward_fn=portfolio_reward, metrics_fn=weight_metrics)
"""


def test_evaluation_reports_the_policy_and_baselines_with_the_reward_strategys_metrics_fn(tmp_path, module_dir):
    name = write_module(module_dir, CUSTOM_METRICS_STRATEGY)
    raw = tiny_config(**{"hisso.reward": f"{name}:STRATEGY", "evaluation.trans_cost": 0.002})
    result = execute_run(parse_run_config(raw), prepare_run_dir(tmp_path, "r"), seed=0)
    assert result.status == "success", result.metrics["error"]
    portfolio = read_metrics(result.run_dir)["portfolio"]
    assert set(portfolio["policy"]) == {"mean_weight_0", "cost_seen"}  # not the default portfolio metrics
    assert 0.0 <= portfolio["policy"]["mean_weight_0"] <= 1.0 and portfolio["policy"]["cost_seen"] == 0.002
    assert portfolio["equal_weight"]["mean_weight_0"] == pytest.approx(1.0 / 2)
    assert portfolio["best_buy_and_hold"]["mean_weight_0"] in (0.0, 1.0)
    assert portfolio["best_buy_and_hold"]["asset"] in (0, 1)


def test_builtin_reward_evaluates_with_the_portfolio_metrics(tmp_path):
    result = execute_run(parse_run_config(tiny_config()), prepare_run_dir(tmp_path, "r"), seed=0)
    metrics = read_metrics(result.run_dir)
    assert set(metrics["portfolio"]["policy"]) == {"cum_return", "log_return", "sharpe", "max_drawdown", "turnover"}
    assert metrics["eval_split"] == metrics["portfolio"]["split"] == "test"


def test_null_portfolio_prices_key_skips_portfolio_metrics_without_a_warning(tmp_path):
    raw = tiny_config(**{"evaluation.portfolio_prices_key": None})
    result = execute_run(parse_run_config(raw), prepare_run_dir(tmp_path, "r"), seed=0)
    assert result.status == "success" and read_metrics(result.run_dir)["portfolio"] is None
    assert not [e for e in read_events(result.run_dir) if e["event"] == "warning"]


# -- supervised runs --------------------------------------------------------------------------------

def test_supervised_run_reports_mse_losses_and_no_portfolio(tmp_path):
    raw = tiny_config(**{"hisso": {"enabled": False}, "estimator.params.epochs": 2})
    config = write_config(tmp_path, raw)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    metrics = read_metrics(run)
    assert metrics["status"] == "success" and metrics["loss_kind"] == "mse"
    assert metrics["val_loss"] == metrics["val_mse"] and metrics["test_loss"] == metrics["test_mse"]
    # A supervised fit counts samples, not episodes.
    assert metrics["throughput_samples_per_sec"] > 0 and metrics["throughput_eps_per_sec"] is None
    assert metrics["episodes"] is None and metrics["eval_split"] == "test"
    assert metrics["portfolio"] is None and metrics["reward"] is None
    epochs = [e for e in read_events(run) if e["event"] == "epoch"]
    assert [(e["phase"], e["epoch"]) for e in epochs] == [("supervised", 1), ("supervised", 2)]
    # Every run writes the same metrics.json keys (null when not applicable), HISSO or not.
    assert main(["--config", str(write_config(tmp_path, tiny_config(), "hisso.yaml")), "--output-dir",
                 str(tmp_path / "runs"), "--run-name", "h"]) == 0
    assert set(metrics) == set(read_metrics(tmp_path / "runs" / "h"))


# -- the market test ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_hisso_policy_beats_equal_weight_on_the_regime_market_on_average_over_3_seeds(tmp_path):
    # Costs are off (hisso.transition_penalty and evaluation.trans_cost 0): the market's signal is
    # a noisy per-step view of each asset's expected return, so a memoryless policy can only use it by
    # trading every step; at a 0.001 cost per unit of turnover that edge is mostly eaten by costs.
    raw = {
        "estimator": {"target": "psann.PSANNRegressor",
                      "params": {"hidden_layers": 1, "hidden_units": 16, "epochs": 30, "lr": 0.003, "w0": 1.0,
                                 "device": "cpu"}},
        "hisso": {"window": 32, "batch_episodes": 32, "updates_per_epoch": 16, "reward": "portfolio",
                  "transition_penalty": 0.0, "val_episodes": 256},
        "data": {"loader": "psann.data.regime_market_dataset", "kwargs": {"steps": 2000, "assets": 4, "features": 8}},
        "training": {"verbose": 0},
        "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.0},
    }
    margins = []
    for seed in (0, 1, 2):
        raw["data"]["kwargs"]["seed"] = seed  # a different market per seed, and a different model init
        config = parse_run_config(raw)
        result = execute_run(config, prepare_run_dir(tmp_path, f"seed{seed}"), seed=seed)
        assert result.status == "success"
        portfolio = result.metrics["portfolio"]
        margins.append(portfolio["policy"]["log_return"] - portfolio["equal_weight"]["log_return"])
    assert np.mean(margins) > 0.0, margins


@pytest.mark.parametrize("name, shape", [("wave_resnet_small", (4, 32)), ("wave_resnet_l128", (4, 128)),
                                         ("wave_resnet_local", (4, 16))])
def test_the_window_configs_train_on_channels_first_windows(tmp_path, name, shape):
    # The default sweep's GPU and local configs and the harder 128-step one, shrunk to a CPU smoke
    # run: the window shape stays.
    raw = yaml.safe_load((REPO / "configs" / "hisso" / f"{name}.yaml").read_text())
    raw["estimator"]["params"].update(epochs=1, hidden_units=8, depth=1, device="cpu", w0_warmup_epochs=0)
    raw["hisso"].update(mixed_precision=False, updates_per_epoch=2)
    raw["data"]["kwargs"]["steps"] = 400
    config = parse_run_config(raw, base_dir=REPO / "configs" / "hisso")
    data = load_dataset(config)
    assert data["X_train"].shape[1:] == shape
    result = execute_run(config, prepare_run_dir(tmp_path, "windows"), dataset=data)
    assert result.status == "success"
    metrics = result.metrics
    assert metrics["portfolio"]["policy"]["cum_return"] is not None


def test_conditioning_keys_need_a_wave_resnet_with_context_dim(tmp_path):
    from psann.runconfig import ConfigError

    data = psann.data.toy_hisso_dataset(steps=120, seed=0)
    data["cond_train"] = np.ones((data["X_train"].shape[0], 2), np.float32)
    path = tmp_path / "with_cond.npz"
    np.savez(path, **data)
    raw = {"estimator": {"target": "psann.PSANNRegressor", "params": {"epochs": 1, "device": "cpu"}},
           "hisso": {"enabled": False}, "data": {"npz": str(path)}}
    with pytest.raises(ConfigError) as info:
        load_dataset(parse_run_config(raw))
    assert info.value.key == "estimator.params.context_dim"


def test_a_supervised_run_feeds_cond_keys_to_wave_resnet_conditioning(tmp_path):
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        X, cond = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
        data.update({f"X_{split}": X, f"cond_{split}": cond, f"y_{split}": X[:, :1] * cond[:, :1]})
    path = tmp_path / "cond.npz"
    np.savez(path, **data)
    raw = {"estimator": {"target": "psann.WaveResNetRegressor",
                         "params": {"epochs": 2, "hidden_units": 8, "depth": 1, "context_dim": 2, "device": "cpu"}},
           "hisso": {"enabled": False}, "data": {"npz": str(path)}, "evaluation": {"portfolio_prices_key": None}}
    result = execute_run(parse_run_config(raw), prepare_run_dir(tmp_path, "cond"))
    assert result.status == "success", result.metrics.get("error")
    assert result.metrics["test_loss"] is not None
    loaded = psann.WaveResNetRegressor.load(tmp_path / "cond" / "checkpoints" / "best")
    assert loaded.model_.conditioning_dim == 2
