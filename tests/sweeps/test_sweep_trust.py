"""Sweeps a user can trust and reproduce (issue 14), on a real local Ray.

The same sweep file and seed sample the same configurations in the same order, and at
concurrency 1 give the same metrics and prune decisions; the report cadence changes no prune
decision; TPE runs seeded under ASHA; repeats run each configuration with seeds seed + r.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from _sweep_helpers import stage, stage_status, trial_dirs, write_sweep
from psann.contract import PRUNED, REPEAT_KEY, SUCCESS, smoothed_loss
from sweeps.spec import load_sweep
from sweeps.stages import format_summary, run_sweep

pytestmark = pytest.mark.slow  # about 3 minutes of Ray trials on 2 cores

SPACE = {"estimator.params.lr": {"loguniform": [0.0005, 0.03]}, "estimator.params.hidden_units": {"choice": [4, 8, 16]}}


def _asha_stage(epochs: int, grace: int, samples: int = 3, **fields):
    return stage("hisso", num_samples=samples, epochs=epochs, max_concurrent_trials=1,
                 scheduler={"type": "asha", "max_t": epochs, "grace_period": grace, "reduction_factor": 2},
                 pass_rule={"min_success_fraction": 0.0}, **fields)


def _by_index(trials):
    """Trials in the order Tune generated them (trial ids end in the generation index)."""
    return sorted(trials, key=lambda t: int(t["trial_id"].rsplit("_", 1)[1]))


def _val_losses(trial_dir: Path) -> list[float]:
    with open(trial_dir / "events.csv", newline="") as handle:
        return [float(r["val_loss"]) for r in csv.DictReader(handle) if r["event"] == "epoch" and r["phase"] == "hisso"]


def _run(tmp_path: Path, name: str, stages, **top):
    folder = tmp_path / name
    path = write_sweep(folder, stages, search_space=SPACE, **top)
    sweep_dir = folder / "out"
    results = run_sweep(load_sweep(path), sweep_dir, verbose=0)
    return results, sweep_dir


@pytest.fixture(scope="module")
def cadence_1(local_ray, tmp_path_factory):
    """An ASHA stage at concurrency 1, reporting every epoch (ASHA rungs at epochs 2 and 4 of 6)."""
    return _run(tmp_path_factory.mktemp("trust"), "cadence1", [_asha_stage(epochs=6, grace=2)])


def test_the_same_sweep_file_samples_the_same_configs_and_gives_the_same_metrics(cadence_1, tmp_path):
    _, first_dir = cadence_1
    _, second_dir = _run(tmp_path, "again", [_asha_stage(epochs=6, grace=2)])
    first = _by_index(stage_status(first_dir, "hisso")["trials"])
    second = _by_index(stage_status(second_dir, "hisso")["trials"])
    assert [t["params"] for t in first] == [t["params"] for t in second]
    assert len({json.dumps(t["params"], sort_keys=True) for t in first}) == 3  # three different samples
    # Concurrency 1 on one machine: the same prune decisions and the same numbers.
    assert [t["outcome"] for t in first] == [t["outcome"] for t in second]
    assert [t["val_loss_smoothed"] for t in first] == [t["val_loss_smoothed"] for t in second]
    for a, b in zip(first, second):
        assert _val_losses(first_dir / "hisso" / a["trial_dir"]) == _val_losses(second_dir / "hisso" / b["trial_dir"])
    assert json.loads((first_dir / "sweep.json").read_text())["seed"] == 7


def test_val_loss_smoothed_is_the_mean_of_the_last_k_epochs_and_ranks_pruned_trials(cadence_1):
    results, sweep_dir = cadence_1
    trials = stage_status(sweep_dir, "hisso")["trials"]
    assert {t["outcome"] for t in trials} <= {SUCCESS, PRUNED}
    for trial in trials:
        losses = _val_losses(sweep_dir / "hisso" / trial["trial_dir"])
        assert trial["val_loss_smoothed"] == pytest.approx(smoothed_loss(losses, 3), rel=1e-12)
        assert trial["val_loss"] == pytest.approx(min(losses), rel=1e-12)  # the min stays a column
    best = results[0].best()
    assert best.val_loss_smoothed == min(t["val_loss_smoothed"] for t in trials)
    # Tune's own best (scope "last": the last reported smoothed value) is the same trial.
    from ray import tune

    analysis = tune.ExperimentAnalysis(str(sweep_dir / "hisso"))
    tune_best = analysis.get_best_trial(metric="val_loss_smoothed", mode="min", scope="last")
    assert tune_best.trial_id == best.trial_id
    assert f"{best.trial_id} val_loss_smoothed=" in format_summary(results)


def test_a_slower_report_cadence_prunes_at_the_same_epochs(cadence_1, tmp_path):
    _, every_epoch = cadence_1
    _, every_third = _run(tmp_path, "cadence3", [_asha_stage(epochs=6, grace=2, report={"every_epochs": 3})])
    fast = _by_index(stage_status(every_epoch, "hisso")["trials"])
    slow = _by_index(stage_status(every_third, "hisso")["trials"])
    assert [t["params"] for t in fast] == [t["params"] for t in slow]
    assert [t["outcome"] for t in fast] == [t["outcome"] for t in slow]
    assert [len(_val_losses(every_epoch / "hisso" / t["trial_dir"])) for t in fast] == \
        [len(_val_losses(every_third / "hisso" / t["trial_dir"])) for t in slow]
    # Fewer reports, same epochs: a finished trial reported at rungs 2 and 4 and at its last epoch 6.
    finished = [t for t in slow if t["outcome"] == SUCCESS]
    assert finished and all(t["iterations"] == 3 for t in finished)
    assert all(t["iterations"] == 6 for t in fast if t["outcome"] == SUCCESS)


def test_optuna_tpe_runs_seeded_under_asha_with_repeats(local_ray, tmp_path):
    stages = [_asha_stage(epochs=2, grace=1, samples=2)]
    results, sweep_dir = _run(tmp_path, "tpe1", stages, search="optuna", repeats=2)
    _, again_dir = _run(tmp_path, "tpe2", stages, search="optuna", repeats=2)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["search"] == "optuna" and record["repeats"] == 2
    trials = stage_status(sweep_dir, "hisso")["trials"]  # TPE's trial ids carry no generation index
    assert len(trials) == 4
    for trial in trials:
        assert 0.0005 <= trial["params"]["estimator.params.lr"] <= 0.03
        assert trial["params"]["estimator.params.hidden_units"] in (4, 8, 16)
    # Repeats: two configurations, each run with repeat indices 0 and 1, i.e. seeds 7 and 8.
    by_config: dict[str, list] = {}
    for trial in trials:
        by_config.setdefault(trial["config_id"], []).append(trial)
    assert len(by_config) == 2 and all(sorted(t["repeat"] for t in runs) == [0, 1] for runs in by_config.values())
    for trial in trials:
        metrics = json.loads((sweep_dir / "hisso" / trial["trial_dir"] / "metrics.json").read_text())
        assert metrics["seed"] == 7 + trial["params"][REPEAT_KEY]
    # Seeded TPE: the same suggestions again.
    again = stage_status(again_dir, "hisso")["trials"]
    canonical = lambda ts: sorted(json.dumps(t["params"], sort_keys=True) for t in ts)  # noqa: E731
    assert canonical(trials) == canonical(again)
    assert "over 2 runs" in format_summary(results) or results[0].configurations()[0]["runs"] == 1


def test_random_search_repeats_hold_each_configuration_over_its_seeds(local_ray, tmp_path):
    results, sweep_dir = _run(tmp_path, "rep", [stage("smoke", num_samples=2, epochs=2, max_concurrent_trials=2)],
                              repeats=3)
    trials = stage_status(sweep_dir, "smoke")["trials"]
    assert len(trials) == 6
    by_config: dict[str, list] = {}
    for trial in trials:
        by_config.setdefault(trial["config_id"], []).append(trial)
    assert len(by_config) == 2
    for runs in by_config.values():
        assert sorted(t["repeat"] for t in runs) == [0, 1, 2]
        assert len({json.dumps({k: v for k, v in t["params"].items() if k != REPEAT_KEY}, sort_keys=True)
                    for t in runs}) == 1
        seeds = {json.loads((sweep_dir / "smoke" / t["trial_dir"] / "metrics.json").read_text())["seed"] for t in runs}
        assert seeds == {7, 8, 9}
    configs = results[0].configurations()
    assert [c["runs"] for c in configs] == [3, 3]
    assert configs[0]["value"] <= configs[1]["value"]
    summary = format_summary(results)
    assert "over 3 runs: val_loss_smoothed" in summary
    assert REPEAT_KEY not in summary.split("best config:")[1].splitlines()[0]
