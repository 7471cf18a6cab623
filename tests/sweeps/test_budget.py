"""Stage budgets and spend estimates without Ray: parsing with key paths, the meter's arithmetic,
cluster prices, epoch times measured from a smoke stage on disk, and --dry-run's estimate."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from _sweep_helpers import ROOT, stage, write_run_config, write_sweep
from psann.errors import ValidationError
from sweeps.budget import (
    BudgetMeter,
    BudgetSpec,
    describe_estimates,
    estimate_stage,
    find_smoke_epoch_seconds,
    load_gpu_price,
    measure_epoch_seconds,
    stage_max_epochs,
)
from sweeps.spec import SweepError, parse_sweep
from sweeps.storage import SweepStore

RUNPOD_YAML = ROOT / "cluster" / "runpod.yaml"


def _raw(**hisso: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "base_config": "run.yaml",
        "search_space": {"estimator.params.lr": {"loguniform": [0.001, 0.01]}},
        "stages": [stage("smoke"), stage("hisso", resources={"cpu": 1, "gpu": 1}, num_samples=16, epochs=60,
                                         scheduler={"type": "asha", "max_t": 60, "grace_period": 12}, **hisso)],
    }


def _parse(tmp_path: Path, raw: dict[str, Any]):
    write_run_config(tmp_path)
    return parse_sweep(raw, path=tmp_path / "sweep.yaml")


def _error(tmp_path: Path, raw: dict[str, Any]) -> SweepError:
    with pytest.raises(SweepError) as info:
        _parse(tmp_path, raw)
    return info.value


# --- the sweep file ---------------------------------------------------------------------------------


def test_budget_and_epoch_seconds_are_parsed_per_stage(tmp_path):
    spec = _parse(tmp_path, _raw(budget={"gpu_hours": 2, "wall_minutes": 90.5}, epoch_seconds=4.5))
    hisso = spec.stage("hisso")
    assert hisso.budget == BudgetSpec(gpu_hours=2.0, wall_minutes=90.5)
    assert hisso.epoch_seconds == 4.5
    assert spec.stage("smoke").budget is None and spec.stage("smoke").epoch_seconds is None


@pytest.mark.parametrize(
    "fields, key, reason",
    [
        ({"budget": {"gpu_hours": -1}}, "stages.hisso.budget.gpu_hours", "expected a number > 0, got -1"),
        ({"budget": {"wall_minutes": 0}}, "stages.hisso.budget.wall_minutes", "expected a number > 0, got 0"),
        ({"budget": {"gpu_hours": "2h"}}, "stages.hisso.budget.gpu_hours", "expected a number > 0, got '2h'"),
        ({"budget": {"gpu_hours": True}}, "stages.hisso.budget.gpu_hours", "expected a number > 0, got True"),
        ({"budget": {"gpu_hour": 1}}, "stages.hisso.budget.gpu_hour", "did you mean 'gpu_hours'?"),
        ({"budget": 3}, "stages.hisso.budget", "expected a mapping"),
        ({"budget": {}}, "stages.hisso.budget", "empty mapping"),
        ({"epoch_seconds": 0}, "stages.hisso.epoch_seconds", "expected a number > 0, got 0"),
        ({"epoch_seconds": float("nan")}, "stages.hisso.epoch_seconds", "expected a number > 0"),
    ],
)
def test_bad_budgets_name_their_key(tmp_path, fields, key, reason):
    error = _error(tmp_path, _raw(**fields))
    assert isinstance(error, ValidationError)
    assert error.key == key and reason in error.reason


def test_a_gpu_hours_cap_on_a_cpu_stage_is_refused(tmp_path):
    raw = _raw()
    raw["stages"][0]["budget"] = {"gpu_hours": 1}
    error = _error(tmp_path, raw)
    assert error.key == "stages.smoke.budget.gpu_hours" and "wall_minutes" in error.reason


def test_a_profile_can_set_a_stage_budget(tmp_path):
    raw = _raw()
    raw["profiles"] = {"cheap": {"stages": {"hisso": {"budget": {"wall_minutes": 5}}}}}
    write_run_config(tmp_path)
    spec = parse_sweep(raw, path=tmp_path / "sweep.yaml", profile="cheap")
    assert spec.stage("hisso").budget == BudgetSpec(wall_minutes=5.0)


# --- the meter ----------------------------------------------------------------------------------------


def test_meter_sums_running_time_times_gpus_and_stage_wall_time():
    meter = BudgetMeter(BudgetSpec(gpu_hours=1.0, wall_minutes=100.0), gpus_per_trial=0.5)
    meter.observe({"a", "b"}, now=0.0)
    meter.observe({"a", "b"}, now=1800.0)
    meter.observe({"b"}, now=3600.0)  # a ended at 3600 s
    assert meter.gpu_hours(3600.0) == pytest.approx((3600 + 3600) * 0.5 / 3600)
    assert meter.exhausted_by(3599.0) is None
    assert meter.exhausted_by(3600.0) == "gpu_hours"
    meter.end("b", 5400.0)
    assert meter.gpu_hours(9999.0) == pytest.approx((3600 + 5400) * 0.5 / 3600)  # nothing runs after 5400 s
    assert meter.wall_minutes(6000.0) == pytest.approx(100.0)


def test_meter_carries_spend_from_an_earlier_driver_and_counts_wall_minutes_without_gpus():
    meter = BudgetMeter(BudgetSpec(gpu_hours=1.0, wall_minutes=10.0), gpus_per_trial=0.0,
                        gpu_seconds=0.0, wall_seconds=540.0)
    meter.observe({"a"}, now=100.0)
    assert meter.exhausted_by(159.0) is None
    assert meter.exhausted_by(160.0) == "wall_minutes"  # 9 carried + 1 minute here
    assert meter.gpu_hours(1e6) == 0.0  # a CPU-only stage spends no GPU hours
    carried = BudgetMeter(BudgetSpec(gpu_hours=1.0), gpus_per_trial=1.0, gpu_seconds=3600.0)
    assert carried.exhausted_by(0.0) == "gpu_hours"


# --- cluster prices -----------------------------------------------------------------------------------


def test_the_shipped_cluster_file_prices_its_gpu_worker():
    price = load_gpu_price(RUNPOD_YAML)
    shipped = yaml.safe_load(RUNPOD_YAML.read_text())["available_node_types"]
    assert price.node_type == "gpu_worker"
    assert price.cost_per_hour == shipped["gpu_worker"]["node_config"]["estimated_cost_per_hour"]
    assert price.per_gpu_hour == price.cost_per_hour / shipped["gpu_worker"]["resources"]["GPU"]
    assert price.head_cost_per_hour == shipped["head"]["node_config"]["estimated_cost_per_hour"]


def _cluster(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(RUNPOD_YAML.read_text())
    edit(raw)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "edit, key, reason",
    [
        (lambda r: r["available_node_types"]["gpu_worker"]["node_config"].pop("estimated_cost_per_hour"),
         "available_node_types.gpu_worker.node_config.estimated_cost_per_hour", "missing in"),
        (lambda r: r["available_node_types"]["gpu_worker"]["node_config"].update(estimated_cost_per_hour="cheap"),
         "available_node_types.gpu_worker.node_config.estimated_cost_per_hour", "got 'cheap'"),
        (lambda r: r["available_node_types"]["gpu_worker"]["resources"].update(GPU=0),
         "available_node_types", "no worker node type with resources.GPU > 0"),
        (lambda r: r.pop("available_node_types"), "available_node_types", "no mapping of node types"),
    ],
)
def test_bad_cluster_files_name_the_key(tmp_path, edit, key, reason):
    with pytest.raises(ValidationError) as info:
        load_gpu_price(_cluster(tmp_path, edit))
    assert info.value.key == key and reason in info.value.reason and "cluster.yaml" in info.value.reason


def test_a_missing_or_unreadable_cluster_file_is_keyed_by_the_flag(tmp_path):
    with pytest.raises(ValidationError) as info:
        load_gpu_price(tmp_path / "nope.yaml")
    assert info.value.key == "--cluster" and "not found" in info.value.reason
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ValidationError) as info:
        load_gpu_price(tmp_path / "bad.yaml")
    assert info.value.key == "--cluster" and "YAML" in info.value.reason


def test_the_dearest_gpu_type_prices_the_estimate(tmp_path):
    def two_types(raw):
        types = raw["available_node_types"]
        types["big"] = {**types["gpu_worker"], "resources": {"CPU": 16, "GPU": 2},
                        "node_config": {**types["gpu_worker"]["node_config"], "estimated_cost_per_hour": 3.0}}
    price = load_gpu_price(_cluster(tmp_path, two_types))
    assert (price.node_type, price.per_gpu_hour) == ("big", 1.5)


# --- estimates ------------------------------------------------------------------------------------------


def test_estimate_is_trials_x_max_epochs_x_epoch_seconds_x_gpus(tmp_path):
    spec = _parse(tmp_path, _raw(epoch_seconds=4.5, budget={"gpu_hours": 2}))
    hisso = estimate_stage(spec, spec.stage("hisso"))
    assert (hisso.trials, hisso.max_epochs) == (16, 60)
    assert hisso.gpu_hours == pytest.approx(16 * 60 * 4.5 / 3600)  # 1.2 GPU h
    price = load_gpu_price(RUNPOD_YAML)
    assert hisso.cost(price) == pytest.approx(1.2 * price.per_gpu_hour)
    lines = describe_estimates([estimate_stage(spec, s) for s in spec.stages], price, "smoke")
    text = "\n".join(lines)
    assert "estimate hisso: <= 1.2 GPU h = 16 trials x 60 epochs x 4.5 s (sweep file) x 1 GPU / 3600" in text
    assert f"<= ${1.2 * price.per_gpu_hour:.2f}" in text and "budget: 2 gpu hours" in text
    assert "ASHA pruning lowers it" in text and "head pod" in text


def test_an_unknown_epoch_time_says_how_to_get_one(tmp_path):
    spec = _parse(tmp_path, _raw())
    lines = describe_estimates([estimate_stage(spec, s) for s in spec.stages], None, "smoke")
    hisso = next(line for line in lines if line.startswith("estimate hisso"))
    assert "unknown" in hisso and "stages.hisso.epoch_seconds" in hisso and "--stages smoke" in hisso
    assert lines[-1].startswith("estimate total: unknown")


def test_max_epochs_come_from_asha_then_the_stage_then_the_run_config(tmp_path):
    spec = _parse(tmp_path, _raw())
    assert stage_max_epochs(spec, spec.stage("hisso")) == 60
    assert stage_max_epochs(spec, spec.stage("smoke")) == 2
    raw = _raw()
    del raw["stages"][0]["epochs"]
    spec = _parse(tmp_path, raw)
    assert stage_max_epochs(spec, spec.stage("smoke")) == 3  # the tiny run config's epochs


def _events(epoch_times: list[float], start: float = 1.0) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["elapsed_seconds", "event", "phase", "epoch"])
    writer.writerow(["0.0", "run_start", "", ""])
    writer.writerow([f"{start}", "dataset", "", ""])
    for i, t in enumerate(epoch_times, 1):
        writer.writerow([f"{t}", "epoch", "hisso", str(i)])
    writer.writerow([f"{epoch_times[-1] + 5}", "run_end", "", ""])
    return out.getvalue()


def _smoke_folder(root: Path, name: str, per_trial: dict[str, list[float]]) -> None:
    folder = root / name / "smoke"
    for trial, times in per_trial.items():
        (folder / trial).mkdir(parents=True)
        (folder / trial / "events.csv").write_text(_events(times))
    status = {"trials": [{"trial_id": t, "trial_dir": t} for t in [*per_trial, "missing_00009"]]}
    (folder / "stage_status.json").write_text(json.dumps(status))


def test_epoch_seconds_are_measured_from_a_smoke_stage_on_disk(tmp_path):
    _smoke_folder(tmp_path, "t-20261201T000000Z", {"a_0": [3.0, 5.0], "a_1": [2.0, 5.0], "a_2": [5.0, 9.0]})
    assert measure_epoch_seconds(SweepStore(tmp_path / "t-20261201T000000Z"), "smoke") == pytest.approx(2.0)
    assert measure_epoch_seconds(SweepStore(tmp_path / "t-20261201T000000Z"), "hisso") is None
    _smoke_folder(tmp_path, "t-20261202T000000Z", {"b_0": [2.0, 3.0]})  # newer: 1 s per epoch
    _smoke_folder(tmp_path, "other-20261203T000000Z", {"c_0": [11.0, 21.0]})  # another sweep
    seconds, where = find_smoke_epoch_seconds(SweepStore(tmp_path), "t", "smoke")
    assert seconds == pytest.approx(1.0) and where.endswith("t-20261202T000000Z/smoke")
    seconds, _ = find_smoke_epoch_seconds(SweepStore(tmp_path), "t", "smoke", prefer="t-20261201T000000Z")
    assert seconds == pytest.approx(2.0)
    assert find_smoke_epoch_seconds(SweepStore(tmp_path), "none", "smoke") is None


# --- the command line -------------------------------------------------------------------------------------


def _main(argv) -> int:
    from sweeps.hisso_wave import main

    return main([str(a) for a in argv])


def test_dry_run_prints_gpu_hours_and_cost_from_a_measured_smoke_stage(tmp_path, capsys):
    path = write_sweep(tmp_path, [stage("smoke"), stage("hisso", resources={"cpu": 1, "gpu": 1}, num_samples=4,
                                                        epochs=6, budget={"gpu_hours": 1})], name="t")
    storage = tmp_path / "out"
    _smoke_folder(storage, "t-20261201T000000Z", {"a_0": [3.0, 5.0]})  # 2 s per epoch
    code = _main(["--sweep", path, "--storage", storage, "--dry-run", "--cluster", RUNPOD_YAML])
    out = capsys.readouterr().out
    assert code == 0, out
    price = load_gpu_price(RUNPOD_YAML)
    hours = 4 * 6 * 2.0 / 3600
    assert f"estimate hisso: <= {hours:.3g} GPU h = 4 trials x 6 epochs x 2 s (measured by the smoke stage in " in out
    assert f"<= ${hours * price.per_gpu_hour:.2f}" in out and "budget: 1 gpu hours" in out
    assert not (storage / "t-20261201T000000Z" / "sweep.json").exists()  # nothing was started


def test_dry_run_with_a_bad_cluster_file_exits_2_naming_it(tmp_path, capsys):
    path = write_sweep(tmp_path, [stage("smoke")])
    code = _main(["--sweep", path, "--storage", tmp_path / "out", "--dry-run", "--cluster", tmp_path / "none.yaml"])
    assert code == 2
    assert "error: --cluster: cluster file not found" in capsys.readouterr().err
