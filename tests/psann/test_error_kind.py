"""error_kind: what ended a run, by the failure's type, in metrics.json beside its message.

Unit tests of ``psann.contract.error_kind``, then one run per kind through the CLI's ``main(argv)``
in-process, each failing through a reward function in a module the test writes (and trusts), and
the run watchdog's hang in process (its exit recorded instead of ending pytest).
"""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from psann import contract as C
from psann._imports import TRUST_ENV, trust
from psann.scripts.hisso_log_run import main
from psann.watchdog import RunWatchdog

# -- the classifier -----------------------------------------------------------------------------------


class _Wrapper(Exception):
    """Stands in for ray.exceptions.RayTaskError: keeps the task's error in ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class OutOfMemoryError(Exception):
    """Named like ray.exceptions.OutOfMemoryError (Ray's memory monitor killed the worker)."""


@pytest.mark.parametrize(
    "exc, kind",
    [
        (RuntimeError("boom"), "exception"),
        (ValueError("bad value"), "exception"),
        (FloatingPointError("hisso epoch 3: loss is nan (training diverged)"), "non_finite"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), "out_of_memory"),
        (MemoryError(), "out_of_memory"),
        (OutOfMemoryError("Task was killed due to the node running low on memory"), "out_of_memory"),
        (KeyboardInterrupt(), "interrupted"),
        (SystemExit(3), "exception"),
    ],
)
def test_exceptions_are_classified_by_type(exc, kind):
    assert C.error_kind(exc) == kind
    assert kind in C.ERROR_KINDS


def test_the_message_never_decides_the_kind():
    assert C.error_kind(RuntimeError("CUDA out of memory")) == "exception"  # an OOM by text only
    assert C.error_kind(RuntimeError("loss is nan")) == "exception"
    assert C.error_kind(FloatingPointError("")) == "non_finite"


def test_a_wrapper_takes_the_kind_of_what_it_wraps_or_the_kind_it_carries():
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as inner:
            raise RuntimeError("the run failed") from inner
    except RuntimeError as outer:
        chained = outer
    assert C.error_kind(chained) == "out_of_memory"
    assert C.error_kind(_Wrapper(FloatingPointError("loss is inf"))) == "non_finite"
    assert C.error_kind(_Wrapper(RuntimeError("plain"))) == "exception"
    carrier = RuntimeError("run error (non_finite): FloatingPointError: ...")
    carrier.error_kind = "non_finite"
    assert C.error_kind(_Wrapper(carrier)) == "non_finite"
    carrier.error_kind = "not a kind"  # an attribute that is not a kind is ignored
    assert C.error_kind(carrier) == "exception"


def test_a_cycle_of_causes_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert C.error_kind(a) == "exception"


@pytest.mark.parametrize(
    "status, kind",
    [
        (C.RUN_ERROR, "exception"), (C.RUN_HUNG, "hung"), (C.RUN_INTERRUPTED, "interrupted"),
        (C.RUN_SUCCESS, None), (C.RUN_RUNNING, None), (None, None),
        (C.ERROR, "exception"), (C.HUNG, "hung"), (C.INTERRUPTED, "interrupted"),
        (C.SUCCESS, None), (C.PRUNED, None), (C.INCOMPLETE, None), (C.RUNNING, None),
    ],
)
def test_statuses_name_their_kind(status, kind):
    assert C.error_kind(status) == kind


def test_anything_else_is_a_type_error():
    with pytest.raises(TypeError, match="error_kind expects an exception"):
        C.error_kind(3)


def test_error_kind_is_a_nullable_string_of_the_metrics_contract_beside_error():
    fields = dict(C.METRICS_FIELDS)
    assert fields["error_kind"] == C.STR
    keys = list(C.METRICS_KEYS)
    assert keys.index("error_kind") == keys.index("error") - 1
    assert C.ERROR_KINDS == ("exception", "non_finite", "out_of_memory", "hung", "interrupted")


def test_the_trial_error_carries_its_kind_across_a_pickle():
    from sweeps.trainable import TrialRunError

    err = pickle.loads(pickle.dumps(TrialRunError("run error (out_of_memory): ...", error_kind="out_of_memory")))
    assert isinstance(err, TrialRunError) and str(err) == "run error (out_of_memory): ..."
    assert C.error_kind(err) == "out_of_memory"


# -- one run per kind, through the CLI ------------------------------------------------------------------

FAULTY_REWARD = """
import torch
from psann.hisso import portfolio_reward
CALLS = [0]
def reward(actions, context, transition_penalty=0.0):
    # Epoch 1 = 2 updates + 1 validation call; the first update of epoch 2 fails.
    CALLS[0] += 1
    value = portfolio_reward(actions, context, transition_penalty=transition_penalty)
    if CALLS[0] > 3:
        {fault}
    return value
"""
FAULTS = {
    "exception": ('raise RuntimeError("simulated bug")', "RuntimeError: simulated bug", 1),
    "non_finite": ('return value * float("nan")', "FloatingPointError: hisso epoch 2: loss is nan", 1),
    "out_of_memory": ('raise torch.OutOfMemoryError("CUDA out of memory (simulated)")',
                      "OutOfMemoryError: CUDA out of memory (simulated)", 1),
    "interrupted": ("raise KeyboardInterrupt", "KeyboardInterrupt", 130),
}


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(TRUST_ENV, os.environ.get(TRUST_ENV, ""))  # restored after the test
    return folder


def _write_module(folder: Path, source: str) -> str:
    name = f"error_kind_test_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source)
    trust([name])  # a config may name it, as with --trust
    return name


def _config(folder: Path, reward: str) -> Path:
    raw = {
        "estimator": {"target": "psann.PSANNRegressor",
                      "params": {"hidden_layers": 1, "hidden_units": 8, "epochs": 3, "w0": 1.0, "device": "cpu"}},
        "hisso": {"window": 8, "batch_episodes": 4, "updates_per_epoch": 2, "reward": reward,
                  "val_episodes": 8, "transition_penalty": 0.001},
        "data": {"loader": "psann.scripts.hisso_log_run.toy_hisso_dataset", "kwargs": {"steps": 120}},
        "training": {"verbose": 0},
    }
    path = folder / "faulty.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_failed_run_records_its_error_kind_beside_its_error_and_keeps_its_exit_code(kind, tmp_path, module_dir):
    fault, message, exit_code = FAULTS[kind]
    name = _write_module(module_dir, FAULTY_REWARD.replace("{fault}", fault))
    config = _config(tmp_path, f"{name}:reward")

    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == exit_code

    (run,) = sorted((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == set(C.METRICS_KEYS)
    assert metrics["status"] == ("interrupted" if kind == "interrupted" else "error")
    assert metrics["error_kind"] == kind
    assert message in metrics["error"]
    assert metrics["epochs_run"] == 1  # epoch 1 finished before the fault


def test_a_successful_run_has_no_error_kind(tmp_path, module_dir):
    config = _config(tmp_path, "portfolio")
    assert main(["--config", str(config), "--output-dir", str(tmp_path / "runs")]) == C.EXIT_OK
    (run,) = sorted((tmp_path / "runs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "success" and metrics["error_kind"] is None and metrics["error"] is None


def test_a_run_the_watchdog_ends_is_recorded_hung(tmp_path):
    exits: list[int] = []
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({**dict.fromkeys(C.METRICS_KEYS), "run_name": "r",
                                                      "status": "running", "epochs_run": 2}))
    with RunWatchdog(run_dir, 0.3, check_every_s=0.05, exit_process=exits.append):
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:  # nothing is written
            time.sleep(0.05)
    assert exits == [C.EXIT_HUNG]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(C.METRICS_KEYS)
    assert (metrics["status"], metrics["error_kind"], metrics["epochs_run"]) == ("hung", "hung", 2)
    assert "nothing written for" in metrics["error"]
