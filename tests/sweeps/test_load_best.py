"""The winner in hand (sweeps.results.load_best / export) and provenance in the trials table."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from _sweep_helpers import RUN_CONFIG, worker_env
from _trial_folders import TrialSpec, standard_sweep, write_stage
from psann.contract import RANK_METRIC, smoothed_loss
from psann.errors import ValidationError
from psann.provenance import PROVENANCE_FIELDS, PROVENANCE_KEYS
from sweeps.results import best_trial_row, ingest_sweep, load_trials, summary
from sweeps.results._cli import main as results_main

PROVENANCE = {"psann_version": "0.1.0", "git_commit": None, "git_dirty": None, "python_version": "3.11.7",
              "torch_version": "2.13.0+cu128", "cuda_version": "12.8", "cudnn_version": 91002,
              "gpu_name": "NVIDIA H200", "gpu_count": 1, "ray_version": "2.60.0", "host": "pod-1",
              "platform": "Linux-6.8-x86_64"}
ARROW = {"str": pa.string(), "int": pa.int64(), "bool": pa.bool_()}


def _by_id(table: pa.Table) -> dict[str, dict]:
    return {row["trial_id"]: row for row in table.to_pylist()}


# --------------------------------------------------------------------------- the ranking (fast)


def test_best_trial_row_is_the_ranking_rules_winner_of_the_last_ranked_stage(tmp_path):
    sweep = standard_sweep(tmp_path)
    ingest_sweep(sweep)
    best = {row["stage"]: row["best_trial_id"] for row in summary(sweep).to_pylist()}
    assert best_trial_row(sweep)["trial_id"] == best["hisso"]  # stage None: the last stage that ranks
    assert best_trial_row(sweep, "smoke")["trial_id"] == best["smoke"]
    smoke = [best_trial_row(sweep, "smoke", rank)[RANK_METRIC] for rank in (1, 2, 3)]
    assert smoke == sorted(smoke)
    # ERROR and HUNG trials never rank: hisso has two SUCCESS and one PRUNED trial.
    assert best_trial_row(sweep, "hisso", 3)["status"] in ("SUCCESS", "PRUNED")
    with pytest.raises(ValidationError) as err:
        best_trial_row(sweep, "hisso", 4)
    assert err.value.key == "rank" and "3 ranked trial(s)" in err.value.reason
    with pytest.raises(ValidationError) as err:
        best_trial_row(sweep, "hisso", 0)
    assert err.value.key == "rank"
    with pytest.raises(ValidationError) as err:
        best_trial_row(sweep, "hiso")
    assert err.value.key == "stage" and "smoke, hisso" in err.value.reason


def test_export_of_bad_input_exits_2_naming_the_flag(tmp_path, capsys):
    sweep = standard_sweep(tmp_path)
    ingest_sweep(sweep)
    assert results_main(["export", str(sweep), "--out", str(tmp_path / "out"), "--rank", "9"]) == 2
    assert "error: rank:" in capsys.readouterr().err
    assert results_main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    assert results_main(["export", str(sweep), "--out", str(busy)]) == 2
    assert "error: --out:" in capsys.readouterr().err


def test_loading_a_checkpoint_imports_no_ray():
    code = "import sys, sweeps.evaluate, sweeps.results; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=worker_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------- provenance columns (fast)


def test_provenance_columns_are_typed_and_the_drivers_git_fills_a_workers(tmp_path):
    sweep = tmp_path / "prov"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(
        {"stages": ["hisso"], "provenance": {**PROVENANCE, "git_commit": "d" * 40, "git_dirty": True}}))
    worker = TrialSpec("ccccc_00000", outcome="SUCCESS", extra_metrics={"provenance": PROVENANCE})
    local = TrialSpec("ccccc_00001", outcome="SUCCESS",
                      extra_metrics={"provenance": {**PROVENANCE, "git_commit": "e" * 40, "git_dirty": False}})
    older = TrialSpec("ccccc_00002", outcome="SUCCESS")  # written before metrics.json had provenance
    write_stage(sweep / "hisso", [worker, local, older])
    ingest_sweep(sweep)
    trials = load_trials(sweep)
    for key, kind in PROVENANCE_FIELDS:
        assert trials.schema.field(f"provenance_{key}").type == ARROW[kind], key
    rows = _by_id(trials)
    assert rows["ccccc_00000"]["provenance_gpu_name"] == "NVIDIA H200"
    assert rows["ccccc_00000"]["provenance_cudnn_version"] == 91002
    # A worker without a checkout records no commit: the driver's (sweep.json) is the code it ran.
    assert (rows["ccccc_00000"]["provenance_git_commit"], rows["ccccc_00000"]["provenance_git_dirty"]) == ("d" * 40, True)
    assert (rows["ccccc_00001"]["provenance_git_commit"], rows["ccccc_00001"]["provenance_git_dirty"]) == ("e" * 40, False)
    assert all(rows["ccccc_00002"][f"provenance_{key}"] is None for key in PROVENANCE_KEYS)
    assert not any(name.startswith("metric_provenance") for name in trials.column_names)


def test_a_stage_status_string_is_carried_into_the_table_unchanged(tmp_path):
    sweep = standard_sweep(tmp_path)
    status_file = sweep / "hisso" / "stage_status.json"
    status = json.loads(status_file.read_text())
    status["status"] = "BUDGET_STOPPED"
    status_file.write_text(json.dumps(status))
    ingest_sweep(sweep)
    rows = load_trials(sweep).to_pylist()
    assert {r["stage_status"] for r in rows if r["stage"] == "hisso"} == {"BUDGET_STOPPED"}
    assert {r["stage_status"] for r in rows if r["stage"] == "smoke"} == {None}
    # A changed stage status is read again by the next ingest.
    status["status"] = "PASSED"
    status_file.write_text(json.dumps(status))
    report = ingest_sweep(sweep)
    assert report.trials_updated == 5
    assert {r["stage_status"] for r in load_trials(sweep, "hisso").to_pylist()} == {"PASSED"}


@pytest.mark.slow  # matplotlib and the plots: about 3 s
def test_the_compendium_prints_provenance_once_per_sweep(tmp_path):
    from sweeps.compendium import build_compendium

    sweep = tmp_path / "prov"
    sweep.mkdir()
    specs = [TrialSpec(f"ddddd_{i:05d}", {"estimator.params.lr": 10.0 ** -i}, outcome="SUCCESS", epochs=3,
                       extra_metrics={"provenance": {**PROVENANCE, "host": f"pod-{i % 2}"}}) for i in range(3)]
    write_stage(sweep / "hisso", specs)
    ingest_sweep(sweep)
    page = next(p for p in build_compendium(sweep, tmp_path / "docs") if p.name == "prov.md").read_text()
    assert page.count("## Provenance") == 1
    assert "| gpu_name | NVIDIA H200 |" in page
    assert "| host | pod-0 (2), pod-1 (1) |" in page
    assert "| git_commit | – |" in page


# --------------------------------------------------------------------------- a real trial (slow)


class _TuneLikeCheckpoints:
    """Keeps a checkpoint_<n> folder per main-phase epoch as sweeps.trainable.TuneReporter does:
    the training state, best/ so far and config_resolved.yaml, with a result.json row."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.losses: list[float] = []

    def on_epoch_end(self, loop, record) -> None:
        import torch

        if record.get("phase") != "hisso":
            return
        self.losses.append(float(record["val_loss"]))
        folder = self.run_dir / f"checkpoint_{len(self.losses) - 1:06d}"
        folder.mkdir()
        torch.save(loop.snapshot().to_dict(), folder / "training_state.pt")
        shutil.copytree(self.run_dir / "checkpoints" / "best", folder / "best")
        shutil.copy2(self.run_dir / "config_resolved.yaml", folder / "config_resolved.yaml")
        row = {"checkpoint_dir_name": folder.name, "epoch": record["epoch"],
               RANK_METRIC: smoothed_loss(self.losses, 2)}
        with open(self.run_dir / "result.json", "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def __getattr__(self, name):  # the loop's other hooks: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory):
    """A sweep folder whose two trials were trained by psann.runs.execute_run (as the trainable does)
    and evaluated by sweeps.evaluate.evaluate_trial, then ingested."""
    from psann.runconfig import parse_run_config
    from psann.runs import execute_run
    from sweeps.evaluate import evaluate_trial
    from sweeps.storage import SweepStore

    sweep = tmp_path_factory.mktemp("load_best") / "winner"
    (sweep / "hisso").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"stages": ["hisso"], "rank_window": 2}))
    for index, lr in enumerate((0.003, 0.03)):
        raw = copy.deepcopy(RUN_CONFIG)
        raw["estimator"]["params"].update(lr=lr, epochs=4)
        trial_dir = sweep / "hisso" / f"eeeee_{index:05d}"
        trial_dir.mkdir()
        (trial_dir / "params.json").write_text(json.dumps({"estimator.params.lr": lr}))
        result = execute_run(parse_run_config(raw, base_dir="."), trial_dir, seed=7 + index,
                             callbacks=[_TuneLikeCheckpoints(trial_dir)])
        assert result.status == "success", result.metrics["error"]
        evaluation, equity = evaluate_trial(SweepStore(sweep), "hisso", trial_dir.name)
        assert evaluation["error"] is None, evaluation["error"]
        (trial_dir / "evaluation.json").write_text(json.dumps(evaluation))
    ingest_sweep(sweep)
    return sweep


def _reevaluate(estimator, trial_dir: Path) -> dict:
    import yaml

    from psann.evaluation import evaluate_split
    from psann.runconfig import parse_run_config
    from psann.runs import load_dataset

    raw = yaml.safe_load((trial_dir / "config_resolved.yaml").read_text())
    raw["evaluation"] = {**raw["evaluation"], "split": "test"}
    config = parse_run_config(raw, base_dir=".")
    return evaluate_split(config, estimator, load_dataset(config), warn=lambda message: None).metrics


@pytest.mark.slow
def test_load_best_reproduces_the_trials_test_evaluation(trained_sweep):
    from sweeps.results import load_best

    row = best_trial_row(trained_sweep)
    trial_dir = trained_sweep / "hisso" / row["trial_dir"]
    evaluation = json.loads((trial_dir / "evaluation.json").read_text())
    estimator = load_best(trained_sweep)
    assert type(estimator).__name__ == "PSANNRegressor"
    figures = _reevaluate(estimator, trial_dir)
    for key in ("test_loss", "test_mse", "test_reward_full"):
        assert figures[key] == evaluation[key], key
    assert figures["portfolio"]["policy"] == evaluation["portfolio"]["policy"]
    assert row["eval_test_loss"] == evaluation["test_loss"] and row["eval_checkpoint"] == evaluation["checkpoint"]
    # Through a URI, and through the object-store path (checkpoints copied to a temp folder).
    import sweeps.storage as storage

    class _Remote(storage.SweepStore):
        def __init__(self, location):
            super().__init__(location)
            self.is_local = False

    via_uri = load_best(f"file://{trained_sweep}", stage="hisso", rank=1)
    assert _reevaluate(via_uri, trial_dir)["test_loss"] == evaluation["test_loss"]
    original = storage.SweepStore
    storage.SweepStore = _Remote
    try:
        remote = load_best(f"file://{trained_sweep}")
    finally:
        storage.SweepStore = original
    assert _reevaluate(remote, trial_dir)["test_loss"] == evaluation["test_loss"]
    second = load_best(trained_sweep, rank=2)
    other = best_trial_row(trained_sweep, rank=2)
    other_eval = json.loads((trained_sweep / "hisso" / other["trial_dir"] / "evaluation.json").read_text())
    assert _reevaluate(second, trained_sweep / "hisso" / other["trial_dir"])["test_loss"] == other_eval["test_loss"]


@pytest.mark.slow
def test_exported_config_reruns_the_trial_through_the_cli(trained_sweep, tmp_path, capsys):
    out = tmp_path / "export"
    assert results_main(["export", str(trained_sweep), "--out", str(out)]) == 0
    assert "exported to" in capsys.readouterr().out
    record = json.loads((out / "export.json").read_text())
    row = best_trial_row(trained_sweep)
    assert (record["stage"], record["trial_id"], record["rank"]) == ("hisso", row["trial_id"], 1)
    assert record["checkpoint"] == row["eval_checkpoint"]
    assert record["provenance"]["torch_version"] == row["provenance_torch_version"]
    trial_metrics = json.loads((trained_sweep / "hisso" / row["trial_dir"] / "metrics.json").read_text())

    # The exported checkpoint is the estimator load_best returns.
    from psann import PSANNRegressor
    from sweeps.results import load_best

    exported = PSANNRegressor.load(out / "checkpoint")
    assert _reevaluate(exported, trained_sweep / "hisso" / row["trial_dir"]) == \
        _reevaluate(load_best(trained_sweep), trained_sweep / "hisso" / row["trial_dir"])

    # Rerun through the CLI in a fresh process, from another folder: the config stands alone.
    command = record["command"].replace("OUTPUT_DIR", str(tmp_path / "rerun"))
    argv = command.split()
    assert argv[:3] == ["python", "-m", "psann.scripts.hisso_log_run"]
    done = subprocess.run([sys.executable, *argv[1:], "--run-name", "again"], cwd=tmp_path, env=worker_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rerun = json.loads((tmp_path / "rerun" / "again" / "metrics.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "val_mse", "test_reward_full", "best_epoch", "epochs_run",
                "reward_mean", "seed"):
        assert rerun[key] == pytest.approx(trial_metrics[key], rel=1e-9), key
    assert rerun["portfolio"]["policy"] == pytest.approx(trial_metrics["portfolio"]["policy"], rel=1e-9)
    for key in PROVENANCE_KEYS:
        assert key in rerun["provenance"]


# --------------------------------------------------------------------------- a real Ray sweep (slow)

from test_results_real_sweep import real_sweep  # noqa: E402,F401 - the fixture: a real two-stage sweep


@pytest.mark.slow
def test_a_real_sweeps_trials_record_provenance_and_load_best_reproduces_its_evaluation(real_sweep):
    from psann.provenance import git_facts
    from sweeps.results import load_best

    sweep_dir, results = real_sweep
    kinds = {"str": str, "int": int, "bool": bool}
    for result in results:
        for trial in result.trials:
            metrics = json.loads((sweep_dir / result.stage / trial.trial_dir / "metrics.json").read_text())
            prov = metrics["provenance"]
            assert sorted(prov) == sorted(PROVENANCE_KEYS)
            for key, kind in PROVENANCE_FIELDS:
                assert prov[key] is None or isinstance(prov[key], kinds[kind]), (key, prov[key])
            assert prov["git_commit"] == git_facts()["git_commit"]  # local Ray: the trial ran this checkout
    trials = load_trials(sweep_dir)
    assert None not in trials["provenance_torch_version"].to_pylist()
    assert trials.schema.field("provenance_gpu_count").type == pa.int64()
    for result in results:  # the stage's own status, whatever the runner wrote, is carried unchanged
        written = json.loads((sweep_dir / result.stage / "stage_status.json").read_text()).get("status")
        assert set(load_trials(sweep_dir, result.stage)["stage_status"].to_pylist()) == {written}

    row = best_trial_row(sweep_dir)  # the last stage, "tuned"
    assert row["stage"] == "tuned" and row["trial_id"] == results[-1].best().trial_id
    evaluation = json.loads((sweep_dir / "tuned" / row["trial_dir"] / "evaluation.json").read_text())
    figures = _reevaluate(load_best(sweep_dir), sweep_dir / "tuned" / row["trial_dir"])
    for key in ("test_loss", "test_mse", "test_reward_full"):
        assert figures[key] == evaluation[key], key
    assert figures["portfolio"]["policy"] == evaluation["portfolio"]["policy"]

