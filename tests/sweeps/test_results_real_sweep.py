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
        top_k=2,
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


def test_every_place_that_names_a_best_trial_agrees_and_it_has_test_figures(real_sweep, tmp_path):
    import json

    from ray import tune

    sweep_dir, results = real_sweep
    best = results[-1].best()
    assert best is not None
    # The runner, query --top (ranking order by default), the results summary and Tune agree.
    top = query(sweep_dir, stage="tuned", top=1)
    assert top.column("trial_id")[0].as_py() == best.trial_id
    assert top.column("val_loss_smoothed")[0].as_py() == pytest.approx(best.val_loss_smoothed)
    by_stage = {row["stage"]: row for row in summary(sweep_dir).to_pylist()}
    assert by_stage["tuned"]["best_trial_id"] == best.trial_id
    analysis = tune.ExperimentAnalysis(str(sweep_dir / "tuned"))
    assert analysis.get_best_trial("val_loss_smoothed", "min", scope="last").trial_id == best.trial_id
    # The compendium names the same winner.
    written = build_compendium(sweep_dir, tmp_path / "docs")
    page = next(p for p in written if p.suffix == ".md" and p.name != "index.md").read_text()
    assert f"`tuned/{best.trial_id}`" in page or f"`{best.trial_id}`" in page
    # The winner, pruned or not, was evaluated on the test split from its best checkpoint.
    evaluation = json.loads((sweep_dir / "tuned" / best.trial_dir / "evaluation.json").read_text())
    assert evaluation["rank"] == 1 and evaluation["error"] is None
    assert isinstance(evaluation["test_loss"], float)
    row = next(r for r in load_trials(sweep_dir).to_pylist() if r["trial_id"] == best.trial_id)
    assert row["eval_test_loss"] == pytest.approx(evaluation["test_loss"])
    evaluated = [t for t in results[-1].ranked()[:2]]
    for trial in evaluated:
        assert (sweep_dir / "tuned" / trial.trial_dir / "evaluation.json").is_file()
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
