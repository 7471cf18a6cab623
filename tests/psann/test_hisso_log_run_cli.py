"""The hisso_log_run CLI as a user runs it: the shipped configs, bad input, re-runs, Ctrl-C, the docs."""

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
import yaml

from _config_edits import edited
from psann.data import load_loader
from psann.estimators import ESTIMATORS
from psann.hisso import hisso_evaluate_reward, hisso_infer_series
from psann.hisso.options import HISSOOptions, WarmStartOptions
from psann.metrics import portfolio_metrics
from psann.runconfig import ConfigError, _SECTION_KEYS, parse_run_config
from psann.contract import (
    EVENT_COLUMNS,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_HUNG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    METRICS_KEYS,
    baseline_verdict,
)
from psann.scripts.hisso_log_run import build_parser, main

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIGS = ("dense_cpu_smoke", "wave_resnet_cpu_smoke")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

PORTFOLIO_METRICS = {"cum_return", "log_return", "sharpe", "max_drawdown", "turnover"}


def cli(*args, timeout=240, **kwargs):
    return subprocess.run([sys.executable, "-m", "psann.scripts.hisso_log_run", *map(str, args)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def read_events(run_dir):
    return pacsv.read_csv(run_dir / "events.csv")


def only_run(output_dir):
    runs = [p for p in Path(output_dir).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Run each shipped CPU config once, unmodified, through the real CLI (both at once: 2 cores)."""
    out = tmp_path_factory.mktemp("smoke")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "psann.scripts.hisso_log_run", "--config", f"configs/hisso/{name}.yaml",
             "--output-dir", str(out / name)],
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in SMOKE_CONFIGS
    }
    runs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        runs[name] = {"returncode": proc.returncode, "stdout": stdout, "stderr": stderr,
                      "run_dir": only_run(out / name)}
    return runs


def _metrics(run):
    return json.loads((run["run_dir"] / "metrics.json").read_text())


def _resolved(run):
    return yaml.safe_load((run["run_dir"] / "config_resolved.yaml").read_text())


# -- the shipped configs -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_each_cpu_config_exits_0_and_writes_every_file_with_the_contract_fields(smoke_runs, name):
    run = smoke_runs[name]
    assert run["returncode"] == 0, run["stderr"][-3000:]
    run_dir = run["run_dir"]
    lines = run["stdout"].strip().splitlines()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    portfolio = metrics["portfolio"]
    # The run ends with its folder and a plain verdict against the baselines.
    assert lines[-1] == f"success: {run_dir}"
    assert lines[-2] == baseline_verdict(portfolio["policy"]["log_return"], portfolio["equal_weight"]["log_return"],
                                         portfolio["best_buy_and_hold"]["log_return"])
    assert run_dir.name.startswith(f"{name}-")  # default run name: config stem + UTC timestamp
    for relative in ("config_resolved.yaml", "metrics.json", "events.csv", "run.log",
                     "checkpoints/best/weights.pt", "checkpoints/best/metadata.json"):
        assert (run_dir / relative).is_file(), relative
    warm = (run_dir / "checkpoints" / "warm_start" / "weights.pt").is_file()
    assert warm == (name == "wave_resnet_cpu_smoke")  # only that config has hisso.supervised
    assert not list((run_dir / "checkpoints").glob("epoch_*"))  # only with --keep-checkpoints

    metrics = _metrics(run)
    assert set(metrics) == set(METRICS_KEYS)  # the run contract (psann.contract), null when not applicable
    assert metrics["status"] == "success" and metrics["error"] is None
    assert metrics["eval_split"] == "test" and metrics["portfolio"]["split"] == "test"
    assert metrics["throughput_samples_per_sec"] is None  # a HISSO run counts episodes, not samples
    assert metrics["loss_kind"] == "neg_reward" and metrics["reward"] == "portfolio"
    assert metrics["device"] == "cpu" and metrics["seed"] == 42
    assert metrics["run_name"] == run_dir.name
    assert metrics["estimator"] == _resolved(run)["estimator"]["target"].rsplit(".", 1)[-1]
    for key in ("train_loss", "val_loss", "test_loss", "reward_mean", "reward_std", "duration_seconds",
                "throughput_eps_per_sec", "transition_penalty"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["train_loss"] == -metrics["reward_mean"]
    params = _resolved(run)["estimator"]["params"]
    hisso = _resolved(run)["hisso"]
    assert metrics["epochs_run"] == metrics["epochs_planned"] == params["epochs"]
    assert metrics["episodes"] == params["epochs"] * hisso["batch_episodes"] * hisso["updates_per_epoch"]
    assert metrics["amp"] == {"enabled": False, "dtype": None, "skipped_steps": 0}
    log = (run_dir / "run.log").read_text()
    assert f"hisso epoch {params['epochs']}/{params['epochs']}" in log and f"run {run_dir.name} finished" in log


@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_events_csv_parses_with_pyarrow_and_has_one_epoch_row_per_epoch_per_phase(smoke_runs, name):
    run = smoke_runs[name]
    table = read_events(run["run_dir"])
    assert table.column_names == list(EVENT_COLUMNS)
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    for column in ("train_loss", "val_loss", "lr", "elapsed_seconds"):
        assert pa.types.is_floating(table.schema.field(column).type), column
    rows = table.to_pylist()
    assert rows[0]["event"] == "run_start" and rows[-1]["event"] == "run_end"
    assert "dataset" in [r["event"] for r in rows]

    metrics, resolved = _metrics(run), _resolved(run)
    phases = {"hisso": metrics["epochs_run"]}
    if resolved["hisso"]["supervised"]:
        phases["warm_start"] = resolved["hisso"]["supervised"]["epochs"]
    epoch_rows = [(r["phase"], r["epoch"]) for r in rows if r["event"] == "epoch"]
    expected = [(phase, epoch) for phase in ("warm_start", "hisso") if phase in phases
                for epoch in range(1, phases[phase] + 1)]
    assert epoch_rows == expected
    assert sorted(r["phase"] for r in rows if r["event"] == "shuffle_policy") == sorted(phases)
    for row in rows:
        if row["event"] == "epoch":
            assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]) and row["lr"] > 0
            if row["phase"] == "hisso":
                assert math.isfinite(row["reward_mean"]) and row["episodes"] > 0


@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_config_resolved_is_the_config_with_defaults_and_the_effective_seed_and_parses_again(smoke_runs, name):
    resolved = _resolved(smoke_runs[name])
    expected = parse_run_config(yaml.safe_load((REPO / f"configs/hisso/{name}.yaml").read_text())).resolved
    expected["estimator"]["params"]["random_state"] = 42
    assert resolved == expected
    assert parse_run_config(resolved).resolved == resolved


@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_best_epoch_is_the_epoch_with_the_lowest_val_loss(smoke_runs, name):
    run = smoke_runs[name]
    metrics = _metrics(run)
    hisso_rows = [r for r in read_events(run["run_dir"]).to_pylist() if r["event"] == "epoch" and r["phase"] == "hisso"]
    best = min(hisso_rows, key=lambda r: r["val_loss"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["val_loss"] == best["val_loss"] and metrics["train_loss"] == best["train_loss"]
    meta = json.loads((run["run_dir"] / "checkpoints" / "best" / "metadata.json").read_text())
    assert meta["fitted"]["best_epoch"] == best["epoch"]


def _smoke_data(run):
    resolved = _resolved(run)
    return load_loader(resolved["data"]["loader"], resolved["data"]["kwargs"])


@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_best_checkpoint_loads_with_its_class_and_reproduces_test_loss_and_portfolio(smoke_runs, name):
    run = smoke_runs[name]
    metrics, resolved, data = _metrics(run), _resolved(run), _smoke_data(run)
    est = ESTIMATORS[metrics["estimator"]].load(run["run_dir"] / "checkpoints" / "best")
    score = hisso_evaluate_reward(est, data["X_test"], data["prices_test"], window=resolved["hisso"]["window"])
    assert -score["reward_window_mean"] == pytest.approx(metrics["test_loss"], abs=1e-6)
    allocations = hisso_infer_series(est, data["X_test"])
    recomputed = portfolio_metrics(allocations, data["prices_test"], metrics["portfolio"]["trans_cost"])
    for key in PORTFOLIO_METRICS:
        assert recomputed[key] == pytest.approx(metrics["portfolio"]["policy"][key], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", SMOKE_CONFIGS)
def test_test_portfolio_metrics_on_positive_prices_are_finite_from_real_allocations_with_baselines(smoke_runs, name):
    run = smoke_runs[name]
    portfolio = _metrics(run)["portfolio"]
    data = _smoke_data(run)
    assert (data["prices_test"] > 0).all()
    assert portfolio["split"] == "test" and portfolio["trans_cost"] == 0.001
    for which in ("policy", "equal_weight", "best_buy_and_hold"):
        block = portfolio[which]
        assert PORTFOLIO_METRICS <= set(block), which
        assert all(isinstance(block[k], float) and math.isfinite(block[k]) for k in PORTFOLIO_METRICS), block
        assert block["cum_return"] > -1.0  # the total-loss failure of raw outputs used as allocations
        assert block["cum_return"] == pytest.approx(math.exp(block["log_return"]) - 1.0, rel=1e-6, abs=1e-9)
        assert -1.0 <= block["max_drawdown"] <= 0.0
    assert 0.0 <= portfolio["policy"]["turnover"] <= 2.0
    assert portfolio["equal_weight"]["turnover"] == 0.0
    assert portfolio["best_buy_and_hold"]["asset"] in range(data["prices_test"].shape[1])
    cls = ESTIMATORS[_metrics(run)["estimator"]]
    allocations = hisso_infer_series(cls.load(run["run_dir"] / "checkpoints" / "best"), data["X_test"])
    assert allocations.shape == data["prices_test"].shape
    assert (allocations >= 0).all() and np.allclose(allocations.sum(axis=1), 1.0, atol=1e-5)


# -- bad input: exit 2, one line naming the key, no run folder -------------------------------------------

GOOD = {
    "estimator": {"target": "psann.PSANNRegressor",
                  "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 2, "w0": 1.0, "device": "cpu"}},
    "hisso": {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio"},
    "data": {"npz": "market.npz"},
    "training": {"verbose": 0},
    "evaluation": {"trans_cost": 0.001},
}


def _market(rows=(40, 16, 16), features=2, assets=2, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in zip(("train", "val", "test"), rows):
        data[f"X_{split}"] = rng.normal(size=(n, features))
        data[f"y_{split}"] = rng.normal(size=(n, assets))
        data[f"prices_{split}"] = 100 * np.exp(np.cumsum(0.01 * rng.normal(size=(n, assets)), axis=0))
    return data


def _with(raw, dotted, value):
    return edited(raw, {dotted: value})


def _nan_market():
    data = _market()
    data["X_val"][3, 1] = np.nan
    return data


def _short_y_market():
    data = _market()
    data["y_val"] = data["y_val"][:-2]
    return data


def _wrong_width_market():
    data = _market()
    data["X_test"] = np.c_[data["X_test"], data["X_test"][:, :1]]
    return data


def _no_y_train_market():
    data = _market()
    del data["y_train"]
    return data


def _negative_price_market():
    data = _market()
    data["prices_test"][5, 0] = -1.0
    return data


BAD_INPUT = [
    # (case id, config, dataset, extra flags, key path the error must start with, text it must contain)
    ("unknown_section", {**GOOD, "trainig": {}}, _market, [], "trainig", "did you mean 'training'"),
    ("unknown_estimator_key", _with(GOOD, "estimator.parms", {}), _market, [], "estimator.parms", "did you mean 'params'"),
    ("unknown_estimator_param", _with(GOOD, "estimator.params.hiden_units", 8), _market, [],
     "estimator.params.hiden_units", "did you mean 'hidden_units'"),
    ("unknown_hisso_key", _with(GOOD, "hisso.windw", 8), _market, [], "hisso.windw", "did you mean 'window'"),
    ("unknown_supervised_key", _with(GOOD, "hisso.supervised", {"y_kye": "y_train"}), _market, [],
     "hisso.supervised.y_kye", "did you mean 'y_key'"),
    ("unknown_data_key", _with(GOOD, "data.nzp", "market.npz"), _market, [], "data.nzp", "did you mean 'npz'"),
    ("unknown_training_key", _with(GOOD, "training.verbos", 1), _market, [], "training.verbos", "did you mean 'verbose'"),
    ("unknown_evaluation_key", _with(GOOD, "evaluation.trans_cots", 0.1), _market, [], "evaluation.trans_cots",
     "did you mean 'trans_cost'"),
    ("window_wrong_type", _with(GOOD, "hisso.window", "abc"), _market, [], "hisso.window", "expected an int >= 2, got 'abc'"),
    ("missing_target", _with(GOOD, "estimator.target", ...), _market, [], "estimator.target", "missing required"),
    ("missing_data", _with(GOOD, "data", ...), _market, [], "data", "missing required"),
    ("target_not_an_estimator", _with(GOOD, "estimator.target", "psann.PSANNNet"), _market, [], "estimator.target",
     "psann estimator"),
    ("unknown_reward", _with(GOOD, "hisso.reward", "sharpe_ratio"), _market, [], "hisso.reward", "unknown reward"),
    ("npz_missing", _with(GOOD, "data.npz", "nowhere/market.npz"), _market, [], "data.npz", "not found"),
    ("npz_with_nan", GOOD, _nan_market, [], "data.npz", "X_val: expected finite values, got nan"),
    ("x_y_length_mismatch", GOOD, _short_y_market, [], "data.npz", "y_val: expected as many rows as X_val"),
    ("feature_count_mismatch", GOOD, _wrong_width_market, [], "data.npz", "expected the same sample shape in every X_* split"),
    ("non_positive_prices", GOOD, _negative_price_market, [], "data.npz", "prices_test: expected prices > 0, got -1.0"),
    ("y_key_missing_from_dataset", _with(GOOD, "hisso.supervised", {"y_key": "y_train", "epochs": 1}), _no_y_train_market,
     [], "hisso.supervised.y_key", "'y_train' is not in the dataset"),
    ("y_key_not_aligned_with_x_train", _with(GOOD, "hisso.supervised", {"y_key": "y_val", "epochs": 1}), _market, [],
     "hisso.supervised.y_key", "aligned with X_train"),
    ("prices_of_another_split", _with(GOOD, "evaluation.split", "val"), _market, [], "evaluation.split",
     "does not match"),
    ("bad_device", GOOD, _market, ["--device", "potato"], "--device", "potato"),
    ("run_name_with_a_path", GOOD, _market, ["--run-name", "../escaped"], "--run-name", "'../escaped'"),
]
if not torch.cuda.is_available():
    BAD_INPUT.append(("cuda_device_without_cuda", GOOD, _market, ["--device", "cuda"], "--device", "CUDA is not available"))


def _write_case(tmp_path, raw, make_data):
    np.savez(tmp_path / "market.npz", **make_data())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("raw, make_data, flags, key, text", [case[1:] for case in BAD_INPUT],
                         ids=[case[0] for case in BAD_INPUT])
def test_bad_config_or_dataset_exits_2_with_one_line_naming_the_key_and_no_run_folder(
        tmp_path, capsys, raw, make_data, flags, key, text):
    config = _write_case(tmp_path, raw, make_data)
    code = main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {key}: "), lines[0]
    assert text in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before any work: no run folder


def test_the_good_npz_config_used_by_the_bad_input_cases_runs(tmp_path, capsys):
    config = _write_case(tmp_path, GOOD, _market)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 0


def test_invalid_yaml_is_reported_on_one_line_with_exit_2(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("estimator: [a\n  b: c\n")
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: not valid YAML")


def test_cli_subprocess_refuses_nan_dataset_with_exit_2_before_creating_a_run_folder(tmp_path):
    config = _write_case(tmp_path, GOOD, _nan_market)
    result = cli("--config", config, "--output-dir", tmp_path / "runs")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: data.npz: ") and "X_val: expected finite values" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_flag_and_missing_config_file_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--config", "x.yaml", "--epochs", "3"])
    assert info.value.code == 2 and "unrecognized arguments: --epochs 3" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.yaml"), "--output-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.yaml'}: config file not found"
    assert not (tmp_path / "runs").exists()


def test_help_explains_every_flag_with_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--config", "--output-dir", "--run-name", "--device", "--seed", "--keep-checkpoints", "--threads",
                 "--hang-timeout", "--verbose"):
        assert flag in text
    assert "example: python -m psann.scripts.hisso_log_run --config" in " ".join(text.split())


# -- re-runs and Ctrl-C ---------------------------------------------------------------------------------

def _fingerprint(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerunning_into_an_existing_run_folder_never_overwrites_it_and_uses_a_suffix(tmp_path, capsys, caplog):
    config = _write_case(tmp_path, GOOD, _market)
    args = ["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", "exp"]
    assert main(args) == 0
    original = _fingerprint(tmp_path / "runs" / "exp")
    assert main(args) == 0
    assert main(args) == 0
    assert _fingerprint(tmp_path / "runs" / "exp") == original
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp", "exp-1", "exp-2"]
    for name in ("exp-1", "exp-2"):
        metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
        assert metrics["status"] == "success" and metrics["run_name"] == name
    assert f"writing to {tmp_path / 'runs' / 'exp-1'} instead" in caplog.text
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"success: {tmp_path / 'runs' / 'exp-2'}"


def test_keep_checkpoints_flag_keeps_one_checkpoint_per_epoch(tmp_path):
    config = _write_case(tmp_path, GOOD, _market)
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--run-name", "r",
                 "--keep-checkpoints"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs" / "r" / "checkpoints").iterdir())
    assert names == ["best", "epoch_0001", "epoch_0002"]


def test_sigint_to_the_cli_process_writes_status_interrupted_and_exits_130(tmp_path):
    raw = _with(GOOD, "estimator.params.epochs", 100_000)
    config = _write_case(tmp_path, raw, _market)
    proc = subprocess.Popen([sys.executable, "-m", "psann.scripts.hisso_log_run", "--config", str(config),
                             "--output-dir", str(tmp_path / "runs"), "--run-name", "r"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = tmp_path / "runs" / "r" / "events.csv"
    try:
        deadline = time.monotonic() + 120
        while not (events.is_file() and ",epoch,hisso,2," in events.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached epoch 2"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert metrics["epochs_run"] >= 2 and metrics["best_epoch"] is not None
    rows = pacsv.read_csv(events).to_pylist()
    assert rows[-1]["event"] == "interrupted"
    assert stdout.strip().splitlines()[-1] == f"interrupted: {tmp_path / 'runs' / 'r'}"


def test_ctrl_c_before_the_run_starts_exits_130_without_a_run_folder(tmp_path, monkeypatch, capsys):
    import psann.scripts.hisso_log_run as cli_module

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "load_run_config", interrupted)
    code = main(["--config", str(tmp_path / "any.yaml"), "--output-dir", str(tmp_path / "runs")])
    assert code == EXIT_INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# -- docs -------------------------------------------------------------------------------------------------

DOC = REPO / "docs" / "hisso_cli.md"
RUN_OUTPUTS = REPO / "docs" / "run_outputs.md"


def _section(text, heading):
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else None]


def _table_rows(text):
    """{first cell without backticks: [other cells]} for markdown table rows whose first cell is `code`."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def _schema_keys():
    """Every key path a run config accepts, from the schema's own sources."""
    keys = {f"{section}.{key}" for section, names in _SECTION_KEYS.items() for key in names}
    keys |= {"hisso.enabled", "hisso.trans_cost"} | {f"hisso.{name}" for name in HISSOOptions.__dataclass_fields__}
    # WarmStartOptions.y takes arrays (Python API); run configs name targets with y_key and refuse y.
    keys |= {f"hisso.supervised.{name}" for name in WarmStartOptions.__dataclass_fields__ if name != "y"}
    keys |= {f"estimator.params.{name}" for cls in ESTIMATORS.values() for name in cls._get_param_names()}
    return keys


def _minimal_config(**hisso):
    return {"estimator": {"target": "psann.PSANNRegressor"}, "hisso": hisso,
            "data": {"loader": "psann.data.toy_hisso_dataset"}}


def test_doc_config_reference_lists_exactly_the_keys_the_schema_accepts():
    rows = _table_rows(_section(DOC.read_text(), "Config reference"))
    assert set(rows) == _schema_keys()
    with pytest.raises(ConfigError) as info:  # the one dataclass field left out is indeed refused
        parse_run_config(_minimal_config(supervised={"y": [1.0, 2.0]}))
    assert info.value.key == "hisso.supervised.y"


def _documented_default(cells):
    """The default column when it is one literal in backticks (else None: required, derived, ...)."""
    match = re.fullmatch(r"`([^`]*)`", cells[1])
    return (True, yaml.safe_load(match.group(1))) if match else (False, None)


def test_doc_config_reference_defaults_match_the_schema():
    rows = _table_rows(_section(DOC.read_text(), "Config reference"))
    resolved = parse_run_config(_minimal_config(supervised={})).resolved
    resolved_no_warm = parse_run_config(_minimal_config()).resolved
    checked = 0
    for key, cells in rows.items():
        has_default, default = _documented_default(cells)
        if not has_default or key in ("estimator.params", "data.kwargs"):
            continue
        section, _, rest = key.partition(".")
        if section == "estimator":
            name = rest.removeprefix("params.")
            actual = {cls.__init__.__kwdefaults__[name] for cls in ESTIMATORS.values()
                      if name in cls._get_param_names() and name not in cls._deprecated_params}
            assert actual == {default}, key
        elif key.startswith("hisso.supervised."):
            assert resolved["hisso"]["supervised"][key.rsplit(".", 1)[-1]] == default, key
        elif key == "hisso.supervised":
            assert resolved_no_warm["hisso"]["supervised"] == default, key
        else:
            assert resolved_no_warm[section][rest] == default, key
        checked += 1
    assert checked >= 50


def test_doc_flags_table_lists_every_cli_flag_and_the_exit_codes():
    usage = _section(DOC.read_text(), "Usage")
    documented = {key for key in _table_rows(usage) if key.startswith("--")}
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert documented == flags - {"-h", "--help"}
    assert "`-h`, `--help`" in usage
    codes = re.findall(r"^\| (\d+) \|", usage, flags=re.M)
    assert codes == [str(code) for code in (EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_HUNG, EXIT_INTERRUPTED)]


def test_run_outputs_doc_lists_exactly_the_metrics_keys_and_event_columns_a_run_writes(smoke_runs):
    text = RUN_OUTPUTS.read_text()
    metrics_section = text[text.index("### metrics.json"): text.index("### events.csv")]
    documented = set()
    for line in metrics_section.splitlines():
        match = re.match(r"^\| ([a-z_, ]+) \|", line)
        if match and match.group(1).strip() != "key":
            documented |= {key.strip() for key in match.group(1).split(",")}
    for name in SMOKE_CONFIGS:
        assert set(_metrics(smoke_runs[name])) == documented
    events_section = text[text.index("### events.csv"): text.index("## A sweep folder")]
    block = events_section[events_section.index("Columns"): events_section.index("- `timestamp`")]
    columns = [c.strip() for c in " ".join(block.splitlines()[1:]).split(",") if c.strip()]
    assert columns == list(EVENT_COLUMNS)


def test_threads_flag_sets_the_runs_torch_threads(tmp_path):
    result = cli("--config", REPO / "configs" / "hisso" / "dense_cpu_smoke.yaml", "--output-dir", tmp_path,
                 "--run-name", "one_thread", "--threads", "1")
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
    assert json.loads((tmp_path / "one_thread" / "metrics.json").read_text())["threads"] == 1
    refused = cli("--config", REPO / "configs" / "hisso" / "dense_cpu_smoke.yaml", "--output-dir", tmp_path,
                  "--threads", "0")
    assert refused.returncode == EXIT_BAD_INPUT and "--threads: expected an int >= 1, got 0" in refused.stderr
