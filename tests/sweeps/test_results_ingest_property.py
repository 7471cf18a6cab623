"""Incremental ingest equals a fresh ingest, whatever happened to the folder in between."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeps.results import ingest_sweep, load_equity, load_events, load_trials

try:
    from ._trial_folders import TrialSpec, evaluation_for, tune_dir_name, write_evaluation, write_trial
except ImportError:
    from _trial_folders import TrialSpec, evaluation_for, tune_dir_name, write_evaluation, write_trial

STAGES = ("smoke", "hisso")
operations = st.lists(
    st.tuples(
        st.sampled_from(["write", "delete", "corrupt", "evaluate"]),
        st.sampled_from(STAGES),
        st.integers(0, 3),  # trial index within the stage
        st.integers(1, 4),  # epochs
        st.sampled_from(["success", "running", "error"]),
        st.booleans(),  # an extra metric column and a run equity curve
    ),
    min_size=1,
    max_size=8,
)


def apply(sweep: Path, op: tuple) -> None:
    kind, stage, index, epochs, status, extra = op
    trial_id = f"{'ab'[STAGES.index(stage)] * 5}_{index:05d}"
    spec = TrialSpec(trial_id, {"hisso.window": 8 * (index + 1)}, epochs=epochs, status=status,
                     extra_metrics={"calmar": float(epochs)} if extra else {},
                     equity_splits=("test",) if extra else ())
    folder = sweep / stage / tune_dir_name(spec, index)
    if kind == "write":
        write_trial(folder, spec)
    elif folder.exists() and kind == "delete":
        shutil.rmtree(folder)
    elif folder.exists() and kind == "evaluate":
        write_evaluation(folder, evaluation_for(spec, stage=stage, rank=index + 1, smoothed=0.1 * epochs))
    elif folder.exists():
        (folder / "metrics.json").write_text('{"status": "succ')


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(operations, min_size=1, max_size=4))
def test_ingesting_after_each_batch_matches_one_fresh_ingest(batches):
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sw"
        sweep.mkdir()
        for batch in batches:
            for op in batch:
                apply(sweep, op)
            ingest_sweep(sweep)
        fresh = Path(tmp) / "fresh" / "sw"
        shutil.copytree(sweep, fresh, ignore=shutil.ignore_patterns("tables"), copy_function=shutil.copy2)
        has_trials = any(sweep.glob("*/*/metrics.json")) or any(sweep.glob("*/*/events.csv"))
        if not has_trials:
            return
        ingest_sweep(fresh)
        incremental = load_trials(sweep).drop_columns(["source_fingerprint"])
        once = load_trials(fresh).drop_columns(["source_fingerprint"])
        assert incremental.equals(once)
        assert load_events(sweep).equals(load_events(fresh))
        assert load_equity(sweep).equals(load_equity(fresh))
