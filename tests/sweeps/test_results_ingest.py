"""sweeps.results ingest: synthetic sweep folders that follow docs/run_outputs.md."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from sweeps.results import SchemaConflictError, ingest_sweep, load_events, load_trials

try:
    from ._trial_folders import TrialSpec, cli_runs, standard_sweep, tune_dir_name, write_trial
except ImportError:
    from _trial_folders import TrialSpec, cli_runs, standard_sweep, tune_dir_name, write_trial


@pytest.fixture
def sweep(tmp_path):
    return standard_sweep(tmp_path)


def by_id(table: pa.Table) -> dict[str, dict]:
    return {row["trial_id"]: row for row in table.to_pylist()}


def plain_dataset(path) -> pa.Table:
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table()


def test_ingest_writes_hive_partitioned_trials_and_events(sweep):
    report = ingest_sweep(sweep)
    assert (report.trials_added, report.trials_updated, report.trials_removed) == (8, 0, 0)
    assert report.stages_written == ("hisso", "smoke")
    assert report.events_added == 60
    assert report.tables_path == str(sweep / "tables")
    for table in ("trials", "events"):
        assert sorted(p.name for p in (sweep / "tables" / table).iterdir()) == [
            "stage=hisso", "stage=smoke"]
    trials = plain_dataset(sweep / "tables" / "trials")
    assert trials.num_rows == 8
    assert sorted(set(trials["stage"].to_pylist())) == ["hisso", "smoke"]
    assert set(trials["sweep"].to_pylist()) == {"hisso_wave"}
    events = plain_dataset(sweep / "tables" / "events")
    assert events.num_rows == 60
    assert events.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert events.schema.field("epoch").type == pa.int64()


def test_runner_outcome_wins_over_metrics_status(sweep):
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    assert {k: v["status"] for k, v in rows.items()} == {
        "aaaaa_00000": "SUCCESS", "aaaaa_00001": "SUCCESS", "aaaaa_00002": "SUCCESS",
        "bbbbb_00000": "SUCCESS", "bbbbb_00001": "SUCCESS",
        "bbbbb_00002": "PRUNED", "bbbbb_00003": "ERROR", "bbbbb_00004": "HUNG",
    }
    pruned = rows["bbbbb_00002"]
    assert (pruned["run_status"], pruned["outcome"], pruned["tune_status"]) == (
        "running", "PRUNED", "TERMINATED")
    assert "CUDA out of memory" in rows["bbbbb_00003"]["error"]
    assert rows["bbbbb_00004"]["error"] == "epoch 3 at 18:00:07; no report for 600 s"
    assert rows["bbbbb_00004"]["hung_last_events"] == rows["bbbbb_00004"]["error"]
    assert rows["bbbbb_00000"]["error"] is None
    assert rows["bbbbb_00000"]["iterations"] == 8 and rows["bbbbb_00000"]["max_epochs"] == 8


@pytest.mark.parametrize(
    ("metrics_status", "expected"),
    [("running", "RUNNING"), ("interrupted", "INTERRUPTED"), ("success", "SUCCESS"),
     ("error", "ERROR")],
)
def test_status_comes_from_metrics_without_stage_status(tmp_path, metrics_status, expected):
    stage = tmp_path / "sw" / "hisso"
    write_trial(stage / tune_dir_name(TrialSpec("ccccc_00000", status=metrics_status), 0),
                TrialSpec("ccccc_00000", status=metrics_status))
    ingest_sweep(tmp_path / "sw")
    [row] = load_trials(tmp_path / "sw").to_pylist()
    assert (row["trial_id"], row["stage"], row["status"]) == ("ccccc_00000", "hisso", expected)
    assert row["outcome"] is None


def test_params_become_params_columns_with_dotted_paths(sweep):
    ingest_sweep(sweep)
    trials = load_trials(sweep)
    assert trials.schema.field("params_estimator__params__lr").type == pa.float64()
    assert trials.schema.field("params_hisso__window").type == pa.int64()
    row = by_id(trials)["bbbbb_00001"]
    assert (row["params_estimator__params__lr"], row["params_hisso__window"]) == (3e-3, 32)


def test_int_and_float_values_of_one_param_widen_to_float(tmp_path):
    stage = tmp_path / "sw" / "hisso"
    for i, lr in enumerate([1, 0.5]):
        spec = TrialSpec(f"ddddd_{i:05d}", {"estimator.params.lr": lr}, status="success")
        write_trial(stage / tune_dir_name(spec, i), spec)
    ingest_sweep(tmp_path / "sw")
    trials = load_trials(tmp_path / "sw")
    assert trials.schema.field("params_estimator__params__lr").type == pa.float64()
    assert sorted(trials["params_estimator__params__lr"].to_pylist()) == [0.5, 1.0]


def test_nested_metrics_flatten_with_underscores(sweep):
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00001"]
    assert (row["amp_enabled"], row["amp_dtype"], row["amp_skipped_steps"]) == (True, "float16", 3)
    metrics = json.loads(next((sweep / "hisso").glob("*bbbbb_00001*/metrics.json")).read_text())
    assert row["portfolio_policy_sharpe"] == metrics["portfolio"]["policy"]["sharpe"]
    assert row["portfolio_equal_weight_cum_return"] == metrics["portfolio"]["equal_weight"]["cum_return"]
    assert row["portfolio_best_buy_and_hold_asset"] == 1
    assert row["val_loss"] == metrics["val_loss"] and row["best_epoch"] == metrics["best_epoch"]


def test_every_contract_metric_is_a_typed_column_even_when_no_trial_has_a_value(sweep):
    from psann.contract import METRIC_COLUMNS

    ingest_sweep(sweep)
    trials = load_trials(sweep)
    kinds = {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
    for name, kind in METRIC_COLUMNS:
        assert trials.schema.field(name).type == kinds[kind], name
    assert set(trials["eval_split"].to_pylist()) == {"test"}
    assert trials["throughput_samples_per_sec"].null_count == trials.num_rows  # HISSO trials only
    assert not any(n.startswith("metric_") for n in trials.column_names)


def test_a_status_outside_the_contract_is_incomplete_naming_the_allowed_ones(tmp_path):
    stage = tmp_path / "sw" / "hisso"
    spec = TrialSpec("eeeee_00000", status="finished")
    write_trial(stage / tune_dir_name(spec, 0), spec)
    ingest_sweep(tmp_path / "sw")
    row = load_trials(tmp_path / "sw").to_pylist()[0]
    assert row["status"] == "INCOMPLETE" and row["run_status"] == "finished"
    assert "'finished'" in row["error"] and "'interrupted', 'running', 'success'" in row["error"]


def test_best_and_final_metrics_come_from_main_phase_epoch_events(sweep):
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00000"]  # 2 warm-start epochs, then 8 hisso epochs
    vals = TrialSpec("bbbbb_00000", epochs=8).val_losses()
    assert row["main_phase"] == "hisso" and row["epochs_logged"] == 8
    assert row["best_val_loss"] == pytest.approx(min(vals), abs=1e-6)
    assert row["best_val_loss_epoch"] == vals.index(min(vals)) + 1
    assert row["final_val_loss"] == pytest.approx(vals[-1], abs=1e-6)
    assert row["last_epoch"] == 8 and row["last_event"] == "run_end"
    assert row["events_count"] == 3 + 2 + 8 + 1


def test_events_table_keeps_every_row_in_file_order(sweep):
    ingest_sweep(sweep)
    events = load_events(sweep, stage="hisso")
    rows = [r for r in events.to_pylist() if r["trial_id"] == "bbbbb_00000"]
    assert [r["seq"] for r in rows] == list(range(14))
    assert [r["event"] for r in rows[:3]] == ["run_start", "dataset", "shuffle_policy"]
    assert rows[2]["message"] == 'episodes sampled at random offsets; "stateful": false'
    assert rows[1]["message"] == "X_train (600, 4); X_val (200, 4), prices_test (200, 3)"
    assert [r["phase"] for r in rows[3:5]] == ["warm_start", "warm_start"]


def test_ingesting_twice_gives_the_same_tables(sweep):
    ingest_sweep(sweep)
    first = (load_trials(sweep), load_events(sweep))
    report = ingest_sweep(sweep)
    assert (report.trials_added, report.trials_updated, report.trials_unchanged) == (0, 0, 8)
    assert report.stages_written == () and report.events_added == 0
    assert load_trials(sweep).equals(first[0]) and load_events(sweep).equals(first[1])


def test_incremental_ingest_reads_only_new_trials_and_leaves_other_stages(sweep):
    ingest_sweep(sweep)
    smoke_file = next((sweep / "tables" / "trials" / "stage=smoke").iterdir())
    smoke_stat = smoke_file.stat()
    spec = TrialSpec("bbbbb_00005", {"estimator.params.lr": 5e-4, "hisso.window": 8},
                     status="success", epochs=4)
    write_trial(sweep / "hisso" / tune_dir_name(spec, 5), spec)
    report = ingest_sweep(sweep)
    assert (report.trials_added, report.trials_updated, report.trials_unchanged) == (1, 0, 8)
    assert report.stages_written == ("hisso",) and report.events_added == 4 + 4
    assert smoke_file.stat().st_mtime_ns == smoke_stat.st_mtime_ns
    trials = load_trials(sweep)
    assert trials.num_rows == 9 and by_id(trials)["bbbbb_00005"]["status"] == "SUCCESS"
    assert load_events(sweep).num_rows == 68


def test_rewritten_metrics_update_the_row_without_duplicating_events(sweep):
    ingest_sweep(sweep)
    folder = next((sweep / "hisso").glob("*bbbbb_00002*"))
    spec = TrialSpec("bbbbb_00002", epochs=5, status="success", seed=2)
    write_trial(folder, spec)
    status = json.loads((sweep / "hisso" / "stage_status.json").read_text())
    for entry in status["trials"]:
        if entry["trial_id"] == "bbbbb_00002":
            entry["outcome"] = "SUCCESS"
    (sweep / "hisso" / "stage_status.json").write_text(json.dumps(status))
    report = ingest_sweep(sweep)
    assert report.trials_updated >= 1 and report.trials_added == 0
    row = by_id(load_trials(sweep))["bbbbb_00002"]
    assert row["status"] == "SUCCESS" and row["epochs_logged"] == 5
    ids = load_events(sweep, stage="hisso")["trial_id"].to_pylist()
    assert ids.count("bbbbb_00002") == 3 + 5 + 1


def test_deleted_trial_folder_and_stage_leave_the_tables(sweep):
    ingest_sweep(sweep)
    shutil.rmtree(next((sweep / "hisso").glob("*bbbbb_00000*")))
    status_file = sweep / "hisso" / "stage_status.json"
    status = json.loads(status_file.read_text())
    status["trials"] = [t for t in status["trials"] if t["trial_id"] != "bbbbb_00000"]
    status_file.write_text(json.dumps(status))
    shutil.rmtree(sweep / "smoke")
    report = ingest_sweep(sweep)
    assert report.trials_removed == 1 + 3
    assert report.events_added == -(14 + 3 * 6)
    trials = load_trials(sweep)
    assert sorted(trials["trial_id"].to_pylist()) == [f"bbbbb_0000{i}" for i in range(1, 5)]
    assert not (sweep / "tables" / "trials" / "stage=smoke").exists()
    assert set(load_events(sweep)["trial_id"].to_pylist()) == set(trials["trial_id"].to_pylist())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"status": "success", "val_loss": 0.', "not valid JSON"),  # half-written
        ("", "empty"),
        ("[1, 2]", "not a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_corrupt_metrics_json_makes_an_incomplete_row(sweep, content, reason):
    folder = next((sweep / "hisso").glob("*bbbbb_00001*"))
    path = folder / "metrics.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    report = ingest_sweep(sweep)
    assert report.incomplete == 1
    row = by_id(load_trials(sweep))["bbbbb_00001"]
    assert row["status"] == "INCOMPLETE" and reason in row["error"]
    assert row["outcome"] == "SUCCESS"  # the runner's verdict is kept beside it
    assert row["params_hisso__window"] == 32 and row["events_count"] == 12


def test_unknown_metrics_status_without_a_runner_verdict_is_incomplete(tmp_path):
    spec = TrialSpec("eeeee_00000", status="exploded")
    write_trial(tmp_path / "sw" / "hisso" / tune_dir_name(spec, 0), spec)
    ingest_sweep(tmp_path / "sw")
    [row] = load_trials(tmp_path / "sw").to_pylist()
    assert row["status"] == "INCOMPLETE" and "status 'exploded' is not one of" in row["error"]


def test_missing_metrics_json_is_incomplete_unless_the_runner_saw_it_hang_or_fail(sweep):
    for trial in ("bbbbb_00001", "bbbbb_00004"):  # SUCCESS and HUNG per stage_status.json
        (next((sweep / "hisso").glob(f"*{trial}*")) / "metrics.json").unlink()
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    assert rows["bbbbb_00001"]["status"] == "INCOMPLETE"
    assert rows["bbbbb_00001"]["error"] == "metrics.json missing"
    assert rows["bbbbb_00004"]["status"] == "HUNG"
    assert "metrics.json missing" in rows["bbbbb_00004"]["error"]


def test_tune_error_txt_fills_the_error_of_a_trial_without_metrics(sweep):
    folder = next((sweep / "hisso").glob("*bbbbb_00003*"))
    (folder / "metrics.json").unlink()
    (folder / "error.txt").write_text("Failure # 1\nray.exceptions.WorkerCrashedError: died\n")
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00003"]
    assert row["status"] == "ERROR"
    assert row["error"].startswith("metrics.json missing; stage_status.json outcome ERROR\n")
    assert row["error"].endswith("WorkerCrashedError: died")


def test_runner_entry_incomplete_error_text_and_unknown_outcomes(sweep):
    status_file = sweep / "hisso" / "stage_status.json"
    status = json.loads(status_file.read_text())
    for entry in status["trials"]:
        if entry["trial_id"] == "bbbbb_00000":
            entry["outcome"] = "INCOMPLETE"
        if entry["trial_id"] == "bbbbb_00001":
            entry["outcome"] = "MAYBE"
        if entry["trial_id"] == "bbbbb_00003":
            entry["error"] = "RayTaskError(RuntimeError): worker lost"
    status_file.write_text(json.dumps(status))
    ingest_sweep(sweep)
    rows = by_id(load_trials(sweep))
    assert rows["bbbbb_00000"]["status"] == "INCOMPLETE"
    assert "runner recorded INCOMPLETE" in rows["bbbbb_00000"]["error"]
    assert rows["bbbbb_00001"]["status"] == "SUCCESS"  # falls back to metrics.json
    assert "outcome 'MAYBE' is not one of" in rows["bbbbb_00001"]["ingest_notes"]
    assert rows["bbbbb_00003"]["error"].endswith("CUDA out of memory\nRayTaskError(RuntimeError): worker lost")


def test_trial_listed_by_runner_without_a_folder_is_kept(sweep):
    shutil.rmtree(next((sweep / "hisso").glob("*bbbbb_00003*")))
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00003"]
    assert row["status"] == "ERROR" and "is missing" in row["error"]


def test_half_written_events_line_is_skipped_and_noted(sweep):
    path = next((sweep / "hisso").glob("*bbbbb_00001*")) / "events.csv"
    path.write_text(path.read_text() + "2026-11-23T18:10:00.000000+00:00,9.5,epo")
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00001"]
    assert row["status"] == "SUCCESS" and row["events_count"] == 12
    assert "skipped 1 malformed row" in row["ingest_notes"]


def test_mistyped_events_csv_value_is_null_with_a_note_and_the_rows_are_kept(sweep):
    path = next((sweep / "hisso").glob("*bbbbb_00001*")) / "events.csv"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(",hisso,1,", ",hisso,one,")
    path.write_text("\n".join(lines) + "\n")
    ingest_sweep(sweep)
    row = by_id(load_trials(sweep))["bbbbb_00001"]
    assert row["status"] == "SUCCESS" and row["events_count"] == len(lines) - 1
    assert "events.csv column 'epoch': row 4 not int64 ('one'); null" in row["ingest_notes"]
    events = load_events(sweep).filter(pc.equal(load_events(sweep)["trial_id"], "bbbbb_00001"))
    assert events["epoch"].to_pylist()[3] is None and events["epoch"].to_pylist()[4] == 2


def test_new_metric_in_later_trials_extends_the_schema(sweep):
    ingest_sweep(sweep)
    spec = TrialSpec("bbbbb_00005", status="success", extra_metrics={"calmar": 1.25,
                                                                      "gpu": {"name": "H100"}})
    write_trial(sweep / "hisso" / tune_dir_name(spec, 5), spec)
    ingest_sweep(sweep)
    for trials in (load_trials(sweep), plain_dataset(sweep / "tables" / "trials")):
        rows = by_id(trials)
        assert trials.schema.field("calmar").type == pa.float64()
        assert rows["bbbbb_00005"]["calmar"] == 1.25 and rows["bbbbb_00005"]["gpu_name"] == "H100"
        assert rows["bbbbb_00000"]["calmar"] is None and rows["aaaaa_00000"]["calmar"] is None
    # the untouched stage was rewritten with the grown schema, so every partition agrees
    smoke = ds.dataset(str(sweep / "tables" / "trials" / "stage=smoke")).schema
    assert "calmar" in smoke.names


def test_new_events_column_extends_the_events_schema(sweep):
    path = next((sweep / "hisso").glob("*bbbbb_00001*")) / "events.csv"
    lines = path.read_text().splitlines()
    lines = [lines[0] + ",gpu_mem_mb"] + [line + (",512" if i == 3 else ",") for i, line in
                                          enumerate(lines[1:])]
    path.write_text("\n".join(lines) + "\n")
    ingest_sweep(sweep)
    events = load_events(sweep)
    assert events.schema.field("gpu_mem_mb").type == pa.int64()
    values = [(r["trial_id"], r["gpu_mem_mb"]) for r in events.to_pylist() if r["gpu_mem_mb"] is not None]
    assert values == [("bbbbb_00001", 512)]
    assert events.num_rows == 60


def test_type_conflict_names_the_column_and_leaves_tables_unchanged(sweep):
    spec = TrialSpec("bbbbb_00005", status="success", extra_metrics={"calmar": 1.5})
    write_trial(sweep / "hisso" / tune_dir_name(spec, 5), spec)
    ingest_sweep(sweep)
    before = load_trials(sweep)
    spec = TrialSpec("aaaaa_00009", status="success", extra_metrics={"calmar": "high"})
    write_trial(sweep / "smoke" / tune_dir_name(spec, 9), spec)
    with pytest.raises(SchemaConflictError, match="'calmar'.*(string.*double|double.*string)"):
        ingest_sweep(sweep)
    assert load_trials(sweep).equals(before)


def test_folder_of_cli_runs_is_stage_runs_keyed_by_folder_name(tmp_path):
    root = cli_runs(tmp_path / "runs", ["wave_seed1", "wave_seed2"])
    report = ingest_sweep(root)
    assert report.trials_added == 2
    trials = load_trials(root)
    assert trials["stage"].to_pylist() == ["runs", "runs"]
    assert trials["trial_id"].to_pylist() == ["wave_seed1", "wave_seed2"]
    row = trials.to_pylist()[0]
    assert row["status"] == "SUCCESS" and row["tune_status"] is None
    # no params.json: the parameters come from config_resolved.yaml
    assert row["params_estimator__params__hidden_units"] == 32
    assert row["params_hisso__reward"] == "portfolio"
    assert (root / "tables" / "trials" / "stage=runs").is_dir()


def test_single_run_folder_is_refused_with_a_hint(tmp_path):
    run = write_trial(tmp_path / "one_run", TrialSpec("one_run", tune_files=False))
    with pytest.raises(ValueError, match="single run folder.*folder that contains it"):
        ingest_sweep(run)


def test_stage_folder_is_refused_with_a_hint(sweep):
    with pytest.raises(ValueError, match="stage folder.*sweep folder that contains it"):
        ingest_sweep(sweep / "hisso")


def test_missing_sweep_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ingest_sweep(tmp_path / "nope")


def test_ingest_through_a_uri_and_a_pyarrow_filesystem(sweep, tmp_path):
    report = ingest_sweep("file://" + str(sweep))
    assert report.trials_added == 8
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy / "hisso_wave", ignore=shutil.ignore_patterns("tables"))
    subtree = pafs.SubTreeFileSystem(str(copy), pafs.LocalFileSystem())
    report = ingest_sweep("hisso_wave", filesystem=subtree)
    assert report.trials_added == 8 and report.tables_path == "hisso_wave/tables"
    assert load_trials(copy / "hisso_wave").num_rows == 8
    assert load_trials("hisso_wave", filesystem=subtree).num_rows == 8


def test_leftovers_of_an_interrupted_swap_are_repaired(sweep):
    ingest_sweep(sweep)
    trials_dir = sweep / "tables" / "trials"
    # interrupted after the old partition was moved aside and before the new one moved in
    os.rename(trials_dir / "stage=smoke", trials_dir / ".stage=smoke.old-123456789abc")
    (trials_dir / ".stage=hisso.tmp-abcdef123456").mkdir()
    (trials_dir / ".stage=hisso.tmp-abcdef123456" / "part-0.parquet").write_bytes(b"junk")
    assert plain_dataset(trials_dir).num_rows == 5  # hidden folders are ignored by readers
    report = ingest_sweep(sweep)
    assert report.trials_added == 0 and report.trials_unchanged == 8
    assert sorted(p.name for p in trials_dir.iterdir()) == ["stage=hisso", "stage=smoke"]
    assert load_trials(sweep).num_rows == 8


def test_tables_are_readable_by_duckdb_without_this_project(sweep):
    duckdb = pytest.importorskip("duckdb")
    ingest_sweep(sweep)
    glob = str(sweep / "tables" / "trials" / "**" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT stage, count(*) AS n, min(val_loss) AS best FROM read_parquet('{glob}', "
        f"hive_partitioning = true) GROUP BY stage ORDER BY stage"
    ).fetchall()
    trials = load_trials(sweep)
    best = {s: min(r["val_loss"] for r in trials.to_pylist() if r["stage"] == s) for s in ("hisso", "smoke")}
    assert rows == [("hisso", 5, best["hisso"]), ("smoke", 3, best["smoke"])]
    glob = str(sweep / "tables" / "events" / "**" / "*.parquet")
    [(n,)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
                        f"WHERE event = 'epoch'").fetchall()
    assert n == 3 * 2 + 8 + 2 + 8 + 2 + 1 + 3
