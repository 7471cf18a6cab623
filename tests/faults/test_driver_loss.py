"""Driver loss: the sweep process is SIGKILLed mid-stage, then ``--resume`` completes the sweep.

The sweep runs as a user runs it (``python sweeps/hisso_wave.py`` in a subprocess, its own session
and Ray temp folder). It is killed with SIGKILL (no handler runs, Tune saves nothing more) once its
first stage has finished and, in the second stage, one trial has finished and the next has
checkpointed at least one epoch and is inside a report; a third trial has not started. The scenario runs once per module
(``killed_and_resumed``); each test checks one promise about its outcome.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from _ray_processes import MARKER, kill_marked, new_marker, wait_for, wait_gone
from _sweep_helpers import ROOT, epoch_rows, stage, stage_status, trial_dirs, worker_env, write_sweep

# Two driver processes, each starting its own embedded Ray: 90 s on a lightly loaded 2-core machine,
# up to 3 min under load (the killed driver's Ray agents may take a minute to go, and are waited for).
pytestmark = pytest.mark.slow

SCRIPT = ROOT / "sweeps" / "hisso_wave.py"
EPOCHS = 8  # about 0.8 s an epoch with the slow reward: the second trial is mid-run when killed
HISSO_TRIALS = 3  # one finished, one killed mid-run, one never started
FINAL_STATUSES = {"SUCCESS", "PRUNED", "ERROR", "HUNG"}
# Ray processes that share the driver's fate exit within seconds of its death; Ray's per-node
# agents poll for the raylet and, with the GCS gone too, take about a minute more (measured here).
FATE_SHARE_S = 10.0
SHUTDOWN_S = 30.0  # a driver that exits normally stops its Ray itself
ORPHAN_DEADLINE_S = 120.0
OLD_STAGING_PREFIX = "psann-ckpt-"  # where sweeps/trainable.py staged checkpoints before: TMPDIR/psann-ckpt-*
STAGING_SUFFIX = ".checkpoint-staging"  # sweeps.trainable.staging_folder: .<trial>.checkpoint-staging


def _staging_folders(ray_tmp: Path) -> list[Path]:
    """Checkpoint staging folders beside the trials' working folders in Ray's session folders (not via session_latest)."""
    return sorted(ray_tmp.glob(f"ray/session_[0-9]*/artifacts/*/hisso/working_dirs/.*{STAGING_SUFFIX}"))


def _status(trial_dir: Path) -> str | None:
    try:
        return json.loads((trial_dir / "metrics.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _checkpointed(trial_dir: Path) -> bool:
    return trial_dir.is_dir() and any(p.name.startswith("checkpoint_") for p in trial_dir.iterdir())


def _run_starts(trial_dir: Path) -> list[str]:
    with open(trial_dir / "events.csv", newline="") as handle:
        return [r["message"] for r in csv.DictReader(handle) if r["event"] == "run_start"]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Run the sweep, SIGKILL its driver mid-stage, record what survived, then resume it."""
    tmp_path = tmp_path_factory.mktemp("driver_loss")
    # Ray's sockets live under its temp folder; a short path keeps them under the 107-byte limit.
    ray_tmp = Path(tempfile.mkdtemp(prefix="psann-rf-", dir="/tmp"))
    marker, resume_marker = new_marker(), new_marker()  # the killed driver's processes, the resumed one's
    # The trials' own temp folders (TMPDIR): one for the killed driver's workers, one for the resumed.
    killed_tmp, resumed_tmp = ray_tmp / "killed-tmp", ray_tmp / "resumed-tmp"
    killed_tmp.mkdir()
    resumed_tmp.mkdir()
    env = {**worker_env(), "RAY_TMPDIR": str(ray_tmp), MARKER: marker, "TMPDIR": str(killed_tmp)}
    path = write_sweep(
        tmp_path,
        [
            stage("smoke", num_samples=1, epochs=1),
            # 0.2 s per reward call stretches each trial over a few seconds, one trial at a time.
            stage("hisso", num_samples=HISSO_TRIALS, epochs=EPOCHS, max_concurrent_trials=1,
                  overrides={"hisso.reward": "_sweep_helpers:slow_reward"}),
        ],
        search_space={"estimator.params.lr": {"choice": [0.003, 0.01]}},
    )
    storage = tmp_path / "out"
    sweep_dir = storage / "k"
    command = [sys.executable, str(SCRIPT), "--sweep", str(path), "--storage", str(storage), "--num-cpus", "2",
               "--name", "k"]
    record: dict = {"sweep_dir": sweep_dir, "tmp_path": tmp_path}
    started = time.monotonic()
    try:
        with open(tmp_path / "first.log", "w") as log:
            driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                      start_new_session=True)
            try:
                def split(hisso: list[Path]) -> tuple[list[Path], list[Path]]:
                    done = [d for d in hisso if _status(d) == "success"]
                    return done, [d for d in hisso if d not in done and _checkpointed(d)]

                def alive() -> None:
                    if driver.poll() is not None:
                        raise RuntimeError(f"the sweep ended (rc {driver.returncode}) before it could be killed:\n"
                                           + (tmp_path / "first.log").read_text()[-3000:])

                def mid_stage():
                    alive()
                    done, running = split(trial_dirs(sweep_dir, "hisso"))
                    return (sweep_dir / "smoke" / "stage_status.json").is_file() and done and running

                def inside_a_report():  # the trial's checkpoint staged: a report in flight
                    alive()
                    return _staging_folders(ray_tmp) and split(trial_dirs(sweep_dir, "hisso"))[1]

                wait_for(mid_stage, 240, "the second stage's second trial to checkpoint an epoch")
                wait_for(inside_a_report, 60, "a report of the running trial", poll_s=0.005)
                driver.send_signal(signal.SIGKILL)  # the driver only: its Ray is left to its own devices
                driver.wait(timeout=30)
            finally:
                if driver.poll() is None:
                    driver.kill()
                    driver.wait()
        record["killed_at_s"] = time.monotonic() - started
        done, running = split(trial_dirs(sweep_dir, "hisso"))
        if not (done and running):
            raise RuntimeError(f"killed outside the scenario: finished {done}, running {running}")
        record["finished_before"] = {d.name for d in done}
        record["running_before"] = {d.name for d in running}
        record["trials_before"] = {d.name for d in trial_dirs(sweep_dir, "hisso")}
        record["finished_epochs_before"] = {d.name: epoch_rows(d) for d in done}
        record["stage_status_before"] = (sweep_dir / "hisso" / "stage_status.json").exists()
        record["staging_after_kill"] = _staging_folders(ray_tmp)
        # What the killed driver's Ray does by itself: exit with it (fate sharing), or linger.
        # The resume starts at once, as a user's would; stragglers are checked again after it.
        killed_at = time.monotonic()
        record["orphans"] = wait_gone(marker, FATE_SHARE_S)
        # Tune restores a trial from the checkpoints its last experiment snapshot lists: did the
        # last snapshot before the kill (every 10 s or so, and after 4 checkpoints) list one?
        from ray import tune

        saved = {t.trial_id: t for t in tune.ExperimentAnalysis(str(sweep_dir / "hisso")).trials}
        record["snapshot_knows_checkpoint"] = any(
            name in saved and saved[name].checkpoint is not None for name in record["running_before"])

        resume_started = time.monotonic()
        resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300,
                                 env={**env, MARKER: resume_marker, "TMPDIR": str(resumed_tmp)}, cwd=tmp_path)
        record["resume_s"] = time.monotonic() - resume_started
        record["resumed"] = resumed
        record["left_after_resume"] = wait_gone(resume_marker, SHUTDOWN_S)
        record["orphans_late"] = wait_gone(marker, max(0.0, ORPHAN_DEADLINE_S - (time.monotonic() - killed_at)))
        # Staging folders: in the trials' TMPDIR (none may be), beside the working folders (the
        # killed driver's session: at most one per killed trial; the resumed one's: none), and in
        # the trial folders (none: a working folder is uploaded there, its staging folder never).
        record["temp_left_by_killed"] = sorted(os.listdir(killed_tmp))
        record["temp_left_by_resumed"] = sorted(os.listdir(resumed_tmp))
        record["staging_left"] = _staging_folders(ray_tmp)
        record["staging_in_storage"] = sorted(str(p) for p in sweep_dir.rglob(f"*{STAGING_SUFFIX}"))
        ingest = subprocess.run([sys.executable, "-m", "sweeps.results", "ingest", str(sweep_dir)],
                                capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        record["ingest"] = ingest
        print(f"\ndriver loss timings: killed after {record['killed_at_s']:.1f} s, resume took "
              f"{record['resume_s']:.1f} s; alive {FATE_SHARE_S:.0f} s after the kill: {record['orphans']}, "
              f"{ORPHAN_DEADLINE_S:.0f} s after it: {record['orphans_late']}; "
              f"snapshot after the checkpoint: {record['snapshot_knows_checkpoint']}")
        yield record
    finally:
        kill_marked(marker)
        kill_marked(resume_marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_resume_after_driver_sigkill_finishes_every_trial_exactly_once(killed_and_resumed):
    record = killed_and_resumed
    sweep_dir = record["sweep_dir"]
    resumed = record["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not record["stage_status_before"]  # killed mid-stage: the stage was not marked finished

    # stage_status.json: every trial once, each with a final outcome, the pre-kill ids kept.
    assert [t["outcome"] for t in stage_status(sweep_dir, "smoke")["trials"]] == ["SUCCESS"]
    hisso = stage_status(sweep_dir, "hisso")
    ids = [t["trial_id"] for t in hisso["trials"]]
    assert len(ids) == HISSO_TRIALS and len(set(ids)) == HISSO_TRIALS, ids
    assert {t["outcome"] for t in hisso["trials"]} == {"SUCCESS"}, hisso["trials"]
    assert record["trials_before"] <= set(ids)
    assert {d.name for d in trial_dirs(sweep_dir, "hisso")} == set(ids)

    # events.csv: each epoch exactly once, no gap, in every trial (the killed one included).
    for trial in trial_dirs(sweep_dir, "hisso"):
        assert epoch_rows(trial) == list(range(1, EPOCHS + 1)), (trial.name, epoch_rows(trial))
    # The trial that had finished before the kill was not run again.
    for name, epochs in record["finished_epochs_before"].items():
        assert epochs == list(range(1, EPOCHS + 1))
        assert all("resume=no" in m for m in _run_starts(sweep_dir / "hisso" / name)), name


def test_trial_running_at_the_kill_continues_from_the_checkpoint_tune_recorded(killed_and_resumed):
    record = killed_and_resumed
    sweep_dir = record["sweep_dir"]
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    if not record["snapshot_knows_checkpoint"]:
        pytest.skip("Tune's last snapshot before the kill listed no checkpoint of the trial (the case below)")
    for name in record["running_before"]:
        starts = _run_starts(sweep_dir / "hisso" / name)
        assert [("resume=yes" in m) for m in starts] == [False, True], (name, starts)


def test_trial_running_at_the_kill_continues_from_its_last_checkpoint_on_disk(killed_and_resumed):
    # tune.get_checkpoint() knows only the checkpoints Tune's last snapshot lists (taken every
    # >= 10 s, or after 4 checkpoints of a trial); the trial finds the newer ones in its folder.
    record = killed_and_resumed
    sweep_dir = record["sweep_dir"]
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    if record["snapshot_knows_checkpoint"]:
        pytest.skip("Tune's last snapshot before the kill listed a checkpoint of the trial (the case above)")
    for name in record["running_before"]:
        starts = _run_starts(sweep_dir / "hisso" / name)
        assert [("resume=yes" in m) for m in starts] == [False, True], (name, starts)


def test_trial_running_at_the_kill_keeps_the_killed_attempt_files_in_attempts(killed_and_resumed):
    record = killed_and_resumed
    sweep_dir = record["sweep_dir"]
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    for name in record["running_before"]:
        kept = sweep_dir / "hisso" / name / "attempts" / "1"
        assert (kept / "events.csv").is_file(), (name, sorted(p.name for p in (sweep_dir / "hisso" / name).iterdir()))
        # The killed attempt's log whole: its own run_start only, and the epochs it reached.
        assert [("resume=yes" in m) for m in _run_starts(kept)] == [False], name
        assert epoch_rows(kept)[:1] == [1] and epoch_rows(kept) == sorted(set(epoch_rows(kept))), name


def test_resumed_sweep_leaves_no_checkpoint_staging_folder(killed_and_resumed):
    record = killed_and_resumed
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    assert not [p for p in record["temp_left_by_resumed"] if p.startswith(OLD_STAGING_PREFIX)]
    resumed = sorted(set(record["staging_left"]) - set(record["staging_after_kill"]))
    assert resumed == [], resumed  # every report of the resumed sweep returned
    assert record["staging_in_storage"] == []


def test_trial_killed_inside_a_report_leaves_no_checkpoint_staging_folder(killed_and_resumed):
    # Staged beside its working folder, not in the system temp folder: what a kill inside a report
    # leaves goes with the working folder (the killed Ray session's), and is never uploaded.
    record = killed_and_resumed
    assert not [p for p in record["temp_left_by_killed"] if p.startswith(OLD_STAGING_PREFIX)]
    assert len(record["staging_after_kill"]) <= len(record["running_before"]), record["staging_after_kill"]
    assert record["staging_in_storage"] == []


def test_results_tables_hold_every_trial_once_with_a_final_status(killed_and_resumed):
    from sweeps.results import load_events, load_trials

    record = killed_and_resumed
    sweep_dir = record["sweep_dir"]
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    ingest = record["ingest"]
    assert ingest.returncode == 0, ingest.stdout[-2000:] + ingest.stderr[-2000:]

    trials = load_trials(sweep_dir).to_pylist()
    per_stage = Counter(t["stage"] for t in trials)
    assert per_stage == {"smoke": 1, "hisso": HISSO_TRIALS}, per_stage
    assert len({(t["stage"], t["trial_id"]) for t in trials}) == len(trials)
    assert {t["status"] for t in trials} <= FINAL_STATUSES, [(t["trial_id"], t["status"]) for t in trials]
    assert {t["status"] for t in trials} == {"SUCCESS"}
    for t in trials:
        if t["stage"] == "hisso":
            assert (t["epochs_logged"], t["last_epoch"]) == (EPOCHS, EPOCHS), t["trial_id"]

    events = load_events(sweep_dir, stage="hisso").to_pylist()
    for trial_id in {t["trial_id"] for t in trials if t["stage"] == "hisso"}:
        epochs = [e["epoch"] for e in events
                  if e["trial_id"] == trial_id and e["event"] == "epoch" and e["phase"] == "hisso"]
        assert epochs == list(range(1, EPOCHS + 1)), (trial_id, epochs)


def test_no_ray_process_is_left_after_the_resumed_sweep(killed_and_resumed):
    record = killed_and_resumed
    assert record["resumed"].returncode == 0, record["resumed"].stderr[-3000:]
    assert record["left_after_resume"] == {}, record["left_after_resume"]


def test_ray_started_by_a_sigkilled_driver_does_not_outlive_it(killed_and_resumed):
    # A SIGKILLed driver runs no exit handler. Its raylet, GCS and workers share its fate (the
    # kernel's parent-death signal). Ray's per-node agents (DashboardAgent, RuntimeEnvAgent) poll
    # for the raylet and, with the GCS gone too, were seen to take 30-60 s more on a loaded
    # 2-core machine. Orphans still there 2 minutes after the kill would hold CPUs, memory and
    # the trial files for good.
    record = killed_and_resumed
    assert record["orphans_late"] == {}, (record["orphans"], record["orphans_late"])
