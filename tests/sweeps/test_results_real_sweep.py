"""The results store on a real sweep made by the sweeps code (not synthetic folders):
ingest at the end of each stage, query, SQL, compendium, and readers that know nothing of us."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest

from _sweep_helpers import stage, write_sweep
from sweeps.compendium import build_compendium
from sweeps.results import ingest_sweep, load_events, load_trials, query, summary
from sweeps.spec import load_sweep


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory, local_ray):
    from sweeps.stages import run_sweep

    folder = tmp_path_factory.mktemp("real_sweep")
    sweep_file = write_sweep(
        folder,
        [
            stage("smoke", num_samples=2, epochs=2),
            stage("tuned", num_samples=3, epochs=4,
                  scheduler={"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2}),
        ],
    )
    spec = load_sweep(sweep_file)
    sweep_dir = folder / "out" / "real"
    results = run_sweep(spec, sweep_dir, verbose=0)
    return sweep_dir, results


def test_runner_ingests_every_stage_into_tables(real_sweep):
    sweep_dir, results = real_sweep
    trials = load_trials(sweep_dir)
    assert trials.num_rows == sum(len(r.trials) for r in results) == 5
    assert sorted(set(trials.column("stage").to_pylist())) == ["smoke", "tuned"]
    by_id = {row["trial_id"]: row for row in trials.to_pylist()}
    for result in results:
        for trial in result.trials:
            assert by_id[trial.trial_id]["status"] == trial.outcome
    assert "params_estimator__params__lr" in trials.column_names
    events = load_events(sweep_dir)
    epoch_rows = [e for e in events.to_pylist() if e["event"] == "epoch" and e["phase"] == "hisso"]
    iterations = sum(t.iterations or 0 for r in results for t in r.trials)
    assert len(epoch_rows) == iterations


def test_reingest_of_a_real_sweep_adds_nothing(real_sweep):
    sweep_dir, _ = real_sweep
    before = load_trials(sweep_dir).num_rows, load_events(sweep_dir).num_rows
    report = ingest_sweep(sweep_dir)
    assert report.trials_added == 0 and report.events_added == 0
    assert (load_trials(sweep_dir).num_rows, load_events(sweep_dir).num_rows) == before


def test_query_summary_and_plain_readers_agree_on_the_best_trial(real_sweep):
    sweep_dir, results = real_sweep
    top = query(sweep_dir, stage="tuned", where="status == 'SUCCESS'", sort="val_loss", top=1)
    best = results[-1].best()
    success = [t for t in results[-1].trials if t.outcome == "SUCCESS"]
    if success:
        assert top.num_rows == 1
        assert top.column("val_loss")[0].as_py() == pytest.approx(min(t.val_loss for t in success))
    assert best is not None
    assert best.trial_id == top.column("trial_id")[0].as_py()  # one ranking rule: sweep summary and query
    by_stage = {row["stage"]: row for row in summary(sweep_dir).to_pylist()}
    assert by_stage["tuned"]["best_trial_id"] == best.trial_id
    assert summary(sweep_dir).num_rows >= 2
    plain = ds.dataset(sweep_dir / "tables" / "trials", format="parquet", partitioning="hive").to_table()
    assert plain.num_rows == 5
    duckdb = pytest.importorskip("duckdb")
    count = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{sweep_dir / 'tables' / 'trials'}/**/*.parquet', hive_partitioning=true)"
    ).fetchall()[0][0]
    assert count == 5


def test_compendium_of_a_real_sweep_has_a_row_per_trial_and_plots(real_sweep, tmp_path):
    sweep_dir, results = real_sweep
    written = build_compendium(sweep_dir, tmp_path / "docs")
    page = next(p for p in written if p.suffix == ".md" and p.name != "index.md")
    text = page.read_text()
    for result in results:
        for trial in result.trials:
            assert trial.trial_id in text
    pngs = [p for p in written if p.suffix == ".png"]
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_a_sweep_into_a_storage_uri_writes_trials_status_and_tables_there(tmp_path, local_ray):
    from sweeps.stages import run_sweep

    sweep_file = write_sweep(tmp_path, [stage("smoke", num_samples=2, epochs=2)])
    uri = (tmp_path / "bucket").as_uri() + "/uri-sweep"
    (result,) = run_sweep(load_sweep(sweep_file), uri, verbose=0)
    assert result.passed and len(result.trials) == 2
    folder = tmp_path / "bucket" / "uri-sweep"
    assert (folder / "sweep.json").is_file() and (folder / "smoke" / "stage_status.json").is_file()
    for trial in result.trials:
        assert (folder / "smoke" / trial.trial_dir / "metrics.json").is_file()
    assert load_trials(uri).num_rows == 2
