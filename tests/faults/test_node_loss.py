"""Node loss: the node running a trial is removed mid-run; the trial resumes elsewhere from its
last checkpoint, finishes, and its events.csv logs every epoch exactly once.

The cluster is a ``ray.cluster_utils.Cluster`` in this process tree: a head with 1 CPU and a worker
node with 1 CPU. An actor pinned to the head holds the head's CPU while the sweep starts, so the
trial's first attempt can only run on the worker node; once the trial has checkpointed epochs
there, the actor is released and the worker node removed (its raylet and workers killed), and
Tune's retry (the stage's ``max_failures``) can only run on the head. The sweep runs as a user runs
it on a cluster: ``python sweeps/hisso_wave.py --address <cluster>`` in a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _ray_processes import MARKER, kill_marked, new_marker, wait_for, wait_gone
from _sweep_helpers import ROOT, epoch_rows, stage, stage_status, trial_dirs, worker_env, write_sweep

# One cluster and one sweep: 37 s on a lightly loaded 2-core machine, 80 s under load.
pytestmark = pytest.mark.slow

SCRIPT = ROOT / "sweeps" / "hisso_wave.py"
EPOCHS = 8  # about 0.8 s an epoch with the slow reward
CHECKPOINTS_BEFORE_LOSS = 2
# A removed node is declared dead after health_check_failure_threshold missed checks.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) + worker node (1 CPU); every process it starts carries a marker checked at the end."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    marker = new_marker()
    ray_tmp = Path(tempfile.mkdtemp(prefix="psann-rn-", dir="/tmp"))  # short: Ray's socket paths
    # The workers' TMPDIR too, so nothing a trial puts in the system temp folder outlives the test
    # (checkpoints are staged beside the trial's working folder, in Ray's session folder here).
    (ray_tmp / "tmp").mkdir()
    saved = {k: os.environ.get(k) for k in (MARKER, "RAY_TMPDIR", "PYTHONPATH", "TMPDIR")}
    os.environ.update({MARKER: marker, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": worker_env()["PYTHONPATH"],
                       "TMPDIR": str(ray_tmp / "tmp")})
    head = None
    try:
        head = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "_system_config": FAST_NODE_DEATH})
        worker = head.add_node(num_cpus=1)
        head.wait_for_nodes()
        ray.init(address=head.address, log_to_driver=False)
        yield head, worker
    finally:
        ray.shutdown()
        if head is not None:
            head.shutdown()
        left = wait_gone(marker, 30)
        kill_marked(marker)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert not left, f"Ray processes left after the cluster shut down: {left}"


def _checkpoints(trial_dir: Path) -> list[Path]:
    return sorted(p for p in trial_dir.glob("checkpoint_*") if (p / "training_state.pt").exists())


def _events(trial_dir: Path) -> list[dict[str, str]]:
    with open(trial_dir / "events.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_trial_on_a_lost_node_resumes_elsewhere_from_its_checkpoint_and_logs_each_epoch_once(cluster, tmp_path):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head, worker = cluster
    head_id, worker_id = head.head_node.node_id, worker.node_id

    @ray.remote(num_cpus=1)
    class HoldCPU:
        def ping(self) -> int:
            return 1

    holder = HoldCPU.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_id, soft=False)).remote()
    ray.get(holder.ping.remote(), timeout=60)  # the head's CPU is taken: the trial must start on the worker

    path = write_sweep(
        tmp_path,
        [stage("train", num_samples=1, epochs=EPOCHS, max_failures=1,
               overrides={"hisso.reward": "_sweep_helpers:slow_reward"})],
    )
    sweep_dir = tmp_path / "out" / "n"
    command = [sys.executable, str(SCRIPT), "--sweep", str(path), "--storage", str(tmp_path / "out"),
               "--name", "n", "--address", head.address]
    started = time.monotonic()
    log_path = tmp_path / "driver.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
        try:
            def checkpointed_on_worker():
                if driver.poll() is not None:
                    raise RuntimeError(f"the sweep ended (rc {driver.returncode}) before the node was lost:\n"
                                         + log_path.read_text()[-3000:])
                trials = trial_dirs(sweep_dir, "train")
                return trials and len(_checkpoints(trials[0])) >= CHECKPOINTS_BEFORE_LOSS and trials[0]

            trial = wait_for(checkpointed_on_worker, 180, f"{CHECKPOINTS_BEFORE_LOSS} checkpoints of the trial")
            lost_at = time.monotonic() - started
            ray.kill(holder)  # free the head's CPU for the retry, then lose the node under the trial
            head.remove_node(worker, allow_graceful=False)
            code = driver.wait(timeout=240)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    log_text = log_path.read_text()
    print(f"\nnode loss timings: node removed after {lost_at:.1f} s, sweep done after {time.monotonic() - started:.1f} s")
    assert code == 0, log_text[-4000:]

    (outcome,) = stage_status(sweep_dir, "train")["trials"]
    assert outcome["outcome"] == "SUCCESS", outcome
    assert outcome["trial_id"] == trial.name

    # Every epoch exactly once, in order, with no gap, across both attempts.
    assert epoch_rows(trial) == list(range(1, EPOCHS + 1)), epoch_rows(trial)
    # The retry continued from a checkpoint taken on the lost node, not from scratch.
    rows = _events(trial)
    starts = [i for i, r in enumerate(rows) if r["event"] == "run_start"]
    assert len(starts) == 2, [r["message"] for r in rows if r["event"] == "run_start"]
    assert "resume=no" in rows[starts[0]]["message"] and "resume=yes" in rows[starts[1]]["message"]
    before = [int(r["epoch"]) for r in rows[: starts[1]] if r["event"] == "epoch" and r["phase"] == "hisso"]
    assert len(before) >= 1, "the retry restored no epoch"
    # The first attempt's own files are kept aside, whole.
    assert (trial / "attempts" / "1" / "events.csv").is_file()

    # Reports came from the worker node first, then from the head only.
    with open(trial / "result.json") as handle:
        results = [json.loads(line) for line in handle if line.strip()]
    nodes = [r["node_id"] for r in results]
    assert nodes[0] == worker_id and nodes[-1] == head_id, nodes
    assert nodes == sorted(nodes, key=lambda n: n == head_id), nodes  # never back on the lost node
    assert outcome["node_id"] == head_id
