"""The run contract (psann.contract) against real runs: what the writers write is what the readers read.

Two real runs (a compiled supervised fit and a HISSO policy with a supervised warm start) go through
``psann.runs.execute_run``; their metrics.json and events.csv are then checked against the contract
and ingested into the Arrow tables: every key a run wrote has a column, and every column has a writer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from psann import contract as C
from psann.runconfig import parse_run_config
from psann.runs import execute_run, prepare_run_dir
from psann.training import Callback

REPO = Path(__file__).resolve().parents[2]
KIND_TYPES = {C.FLOAT: (float,), C.INT: (int,), C.STR: (str,), C.BOOL: (bool,), C.OBJECT: (dict,)}
OBJECTS = {name for name, kind in C.METRICS_FIELDS if kind == C.OBJECT}


def _flat(metrics: dict) -> dict:
    """metrics.json flattened as the trials table names it; a null object (no portfolio) has no columns."""
    flat = C.flatten_keys({k: v for k, v in metrics.items() if k not in ("status", "error")})
    return {k: v for k, v in flat.items() if not (k in OBJECTS and v is None)}


def _raw(hisso: bool) -> dict:
    raw = {
        "estimator": {"target": "psann.PSANNRegressor",
                      "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 2, "w0": 1.0, "device": "cpu"}},
        "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 120}},
        "training": {"verbose": 0},
    }
    if hisso:
        raw["hisso"] = {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "reward": "portfolio",
                        "val_episodes": 8, "supervised": {"epochs": 1}}
    else:
        raw["hisso"] = {"enabled": False}
        # The supervised run trains through torch.compile, so the compile figures are written too.
        raw["estimator"]["params"]["compile"] = True
    return raw


class _Records(Callback):
    """Keeps every per-epoch record the training loop publishes."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_epoch_end(self, loop, record) -> None:
        self.records.append(dict(record))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (run_dir, metrics, epoch records)} of one supervised and one HISSO run in one folder."""
    folder = tmp_path_factory.mktemp("contract") / "runs"
    out = {}
    for name, hisso in (("supervised", False), ("hisso", True)):
        records = _Records()
        run_dir = prepare_run_dir(folder, name)
        result = execute_run(parse_run_config(_raw(hisso)), run_dir, seed=0, callbacks=[records])
        assert result.status == C.RUN_SUCCESS, result.metrics.get("error")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        out[name] = (run_dir, metrics, records.records)
    return folder, out


def _events(run_dir: Path) -> list[dict]:
    options = pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True)
    return pacsv.read_csv(run_dir / "events.csv", convert_options=options).to_pylist()


# -- metrics.json ---------------------------------------------------------------------------------

def test_real_runs_write_exactly_the_contract_keys_with_the_contract_kinds(runs):
    _, by_name = runs
    for name, (_, metrics, _) in by_name.items():
        assert list(metrics) == sorted(C.METRICS_KEYS), name  # every key, null when not applicable
        for key, kind in C.METRICS_FIELDS:
            value = metrics[key]
            assert value is None or isinstance(value, KIND_TYPES[kind]), (name, key, value)
        assert metrics["status"] in C.RUN_STATUSES
        kinds = dict(C.METRIC_COLUMNS)
        for key, value in _flat(metrics).items():
            assert key in kinds, f"{name}: metrics.json key {key} is not in the contract"
            assert value is None or isinstance(value, KIND_TYPES[kinds[key]]), (name, key, value)


def test_throughput_and_eval_split_name_what_they_hold(runs):
    _, by_name = runs
    supervised, hisso = by_name["supervised"][1], by_name["hisso"][1]
    assert supervised["throughput_samples_per_sec"] > 0 and supervised["throughput_eps_per_sec"] is None
    assert hisso["throughput_eps_per_sec"] > 0 and hisso["throughput_samples_per_sec"] is None
    assert supervised["eval_split"] == hisso["eval_split"] == "test"
    assert hisso["portfolio"]["split"] == hisso["eval_split"]


def test_every_metrics_key_has_a_trials_column_and_every_metric_column_has_a_writer(runs):
    from sweeps.results import ingest_sweep, load_trials
    from sweeps.results._schema import KNOWN_TRIAL_TYPES, METRICS_KEY_COLUMNS

    folder, by_name = runs
    ingest_sweep(folder)
    rows = {row["trial_dir"]: row for row in load_trials(folder).to_pylist()}
    written: set[str] = set()
    for name, (run_dir, metrics, _) in by_name.items():
        row = rows[run_dir.name]
        assert row["ingest_notes"] is None, row["ingest_notes"]  # no value misfit its column's type
        assert row["status"] == C.RUN_STATUS_TO_TRIAL_STATUS[metrics["status"]] == C.SUCCESS
        for key, column in METRICS_KEY_COLUMNS.items():
            assert column in KNOWN_TRIAL_TYPES and row[column] == metrics[key], (name, key)
        flat = _flat(metrics)
        for key, value in flat.items():
            assert key in KNOWN_TRIAL_TYPES, f"{name}: {key} has no column in the trials table"
            if isinstance(value, float):
                assert row[key] == pytest.approx(value), (name, key)
            elif value is not None:
                assert row[key] == value, (name, key)
        written |= set(flat) | set(METRICS_KEY_COLUMNS)
    columns = {name for name, _ in C.METRIC_COLUMNS}
    assert columns <= written, f"contract columns no run writes: {sorted(columns - written)}"
    extra = [c for c in load_trials(folder).column_names
             if c not in KNOWN_TRIAL_TYPES and not c.startswith("params_")]
    assert extra == [], f"columns outside the contract: {extra}"


# -- events.csv -----------------------------------------------------------------------------------

def test_every_events_column_has_a_writer_and_a_column_in_the_events_table(runs):
    from sweeps.results import ingest_sweep, load_events
    from sweeps.results._schema import EVENT_KEY_COLUMNS

    folder, by_name = runs
    filled: set[str] = set()
    for name, (run_dir, _, _) in by_name.items():
        header = (run_dir / "events.csv").read_text().splitlines()[0]
        assert header.split(",") == list(C.EVENT_COLUMNS), name
        for row in _events(run_dir):
            assert row["event"] in C.EVENT_KINDS, (name, row["event"])
            assert row["phase"] is None or row["phase"] in C.PHASES, (name, row["phase"])
            filled |= {k for k, v in row.items() if v is not None}
    assert filled == set(C.EVENT_COLUMNS), f"columns no run fills: {sorted(set(C.EVENT_COLUMNS) - filled)}"
    ingest_sweep(folder)
    events = load_events(folder)
    assert set(events.column_names) == {n for n, _ in EVENT_KEY_COLUMNS} | set(C.EVENT_COLUMNS)
    assert events.num_rows == sum(len(_events(run_dir)) for run_dir, _, _ in by_name.values())


def test_every_key_of_the_loops_epoch_record_is_an_events_column_or_left_out_on_purpose(runs):
    _, by_name = runs
    keys: set[str] = set()
    for _, _, records in by_name.values():
        assert records
        for record in records:
            keys |= set(record)
    assert keys - set(C.EVENT_COLUMNS) <= C.EPOCH_RECORD_UNLOGGED, sorted(keys - set(C.EVENT_COLUMNS))
    # What each epoch reports to Tune comes from these records; the final report from metrics.json.
    assert set(C.TUNE_EPOCH_KEYS) <= keys
    assert set(C.TUNE_FINAL_KEYS) <= set(C.METRICS_KEYS)
    assert {record["phase"] for _, _, records in by_name.values() for record in records} == set(C.PHASES)


# -- the contract module itself ---------------------------------------------------------------------

def test_contract_imports_without_torch_ray_numpy_or_pyarrow():
    code = ("import sys, psann.contract; "
            "print(sorted(m for m in ('torch', 'ray', 'numpy', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported():
    for name in C.__all__:
        assert hasattr(C, name), name


def test_best_trial_is_the_ranked_trial_with_the_lowest_smoothed_loss_ties_by_stage_then_id():
    m = C.RANK_METRIC
    trials = [
        {"stage": "b", "trial_id": "t1", "status": "SUCCESS", m: 0.5},
        {"stage": "b", "trial_id": "t0", "status": "SUCCESS", m: 0.5},
        {"stage": "a", "trial_id": "t9", "status": "SUCCESS", m: 0.7},
        {"stage": "a", "trial_id": "t3", "status": "SUCCESS", m: math.nan},
        {"stage": "a", "trial_id": "t4", "status": "SUCCESS", m: None},
        {"stage": "a", "trial_id": "t5", "status": "ERROR", m: 0.0},  # errors are never ranked
        {"stage": "a", "trial_id": "t7", "status": "HUNG", m: -1.0},
    ]
    assert C.best_trial(trials)["trial_id"] == "t0"
    trials.append({"stage": "a", "trial_id": "t6", "status": "SUCCESS", m: 0.5})
    assert C.best_trial(trials)["trial_id"] == "t6"  # same value, earlier stage
    trials.append({"stage": "b", "trial_id": "t2", "status": "PRUNED", m: 0.1})
    assert C.best_trial(trials)["trial_id"] == "t2"  # a pruned trial is ranked like a finished one
    assert [t["trial_id"] for t in C.rank_trials(trials)] == ["t2", "t6", "t0", "t1", "t9"]
    assert C.best_trial(t for t in trials if t["status"] not in C.RANKED_STATUSES) is None
    assert C.best_trial([]) is None
    assert C.BEST_TRIAL_METRIC == "val_loss_smoothed" == C.TUNE_METRIC


def test_best_trial_reads_objects_and_another_status_field():
    from types import SimpleNamespace

    trials = [SimpleNamespace(trial_id="x", outcome="SUCCESS", val_loss_smoothed=1.0),
              SimpleNamespace(trial_id="y", outcome="PRUNED", val_loss_smoothed=-1.0),
              SimpleNamespace(trial_id="z", outcome="HUNG", val_loss_smoothed=-5.0)]
    assert C.best_trial(trials, status_key="outcome").trial_id == "y"
    assert C.ranking_value("SUCCESS", True) is None and C.ranking_value("SUCCESS", 2) == 2.0


def test_smoothed_loss_is_the_mean_of_the_last_k_values():
    assert C.smoothed_loss([0.9, 0.5, 0.4, 0.3], 3) == pytest.approx(0.4)
    assert C.smoothed_loss([0.9, 0.5], 3) == pytest.approx(0.7)  # fewer epochs: what there is
    assert C.smoothed_loss([0.9], 1) == 0.9
    assert C.smoothed_loss([], 3) is None
    assert C.smoothed_loss([0.1, math.inf, 0.2], 3) is None  # a diverged epoch in the window
    assert C.smoothed_loss([math.nan, 0.1, 0.2], 2) == pytest.approx(0.15)  # outside the window
    with pytest.raises(ValueError, match="window"):
        C.smoothed_loss([0.1], 0)


def test_config_id_ignores_the_repeat_index_and_key_order():
    a = C.config_id({"estimator.params.lr": 0.001, "hisso.window": 16, C.REPEAT_KEY: 2})
    assert a == C.config_id({"hisso.window": 16, "estimator.params.lr": 0.001})
    assert a != C.config_id({"estimator.params.lr": 0.002, "hisso.window": 16})
    assert len(a) == 10


def test_rank_configurations_ranks_by_the_mean_of_the_runs():
    m = C.RANK_METRIC
    trials = [
        {"config_id": "a", "status": "SUCCESS", m: 0.1},
        {"config_id": "a", "status": "SUCCESS", m: 0.5},  # mean 0.3
        {"config_id": "b", "status": "PRUNED", m: 0.2},
        {"config_id": "b", "status": "SUCCESS", m: 0.2},  # mean 0.2: best, though "a" has the best run
        {"config_id": "c", "status": "ERROR", m: 0.0},  # no ranked run: left out
    ]
    ranked = C.rank_configurations(trials)
    assert [(e["config_id"], e["runs"]) for e in ranked] == [("b", 2), ("a", 2)]
    assert ranked[0]["value"] == pytest.approx(0.2) and ranked[0]["std"] == pytest.approx(0.0)
    assert ranked[1]["value"] == pytest.approx(0.3) and ranked[1]["std"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("run_status", "hung", "raised", "expected"),
    [
        ("success", False, False, "SUCCESS"),
        ("running", False, False, "PRUNED"),
        ("error", False, False, "ERROR"),
        ("success", False, True, "ERROR"),
        ("running", True, False, "HUNG"),
        ("interrupted", False, False, "INCOMPLETE"),
        (None, False, False, "INCOMPLETE"),
    ],
)
def test_trial_outcome_rule(run_status, hung, raised, expected):
    assert C.trial_outcome(run_status, hung=hung, raised=raised) == expected
    assert expected in C.TRIAL_STATUSES


def test_exit_codes_are_distinct_and_documented():
    codes = [C.EXIT_OK, C.EXIT_FAILURE, C.EXIT_BAD_INPUT, C.EXIT_NO_GPU, C.EXIT_HUNG, C.EXIT_INTERRUPTED]
    assert codes == [0, 1, 2, 3, 124, 130]
    assert set(C.EXIT_CODES) == set(codes)
    text = (REPO / "docs" / "run_outputs.md").read_text()
    section = text[text.index("## Exit codes"):]
    for code in codes:
        assert f"| {code} | `EXIT_" in section, code


def test_run_outputs_doc_names_every_trial_status_and_the_best_trial_rule():
    text = (REPO / "docs" / "run_outputs.md").read_text()
    for status in C.TRIAL_STATUSES:
        assert status in text, status
    assert "psann.contract.best_trial" in text


def test_baseline_verdict_says_plainly_whether_the_policy_beat_its_baselines():
    assert C.baseline_verdict(0.12, 0.09, 0.98) == (
        "On test the policy BEAT equal weight (log return +0.1200 vs +0.0900, margin +0.0300); "
        "it did NOT beat the best buy-and-hold asset (+0.9800).")
    assert C.baseline_verdict(-0.05, 0.09, split="val") == (
        "On val the policy did NOT beat equal weight (log return -0.0500 vs +0.0900, margin -0.1400).")
    assert "did NOT beat equal weight" in C.baseline_verdict(0.09, 0.09)  # a tie is not a win
    assert C.baseline_verdict(None, 0.1) is None and C.baseline_verdict(0.1, math.nan) is None
