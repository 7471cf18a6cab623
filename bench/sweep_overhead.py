"""Sweep overhead benchmark: how much of the cores a staged Ray Tune sweep keeps busy, and what ASHA saves.

Three runs over the same 16 configs (a 4 x 4 grid of lr x w0 on a dense PSANN HISSO policy, the
built-in regime market), each trial about --trial-seconds of compute:

  A. a 16-trial CPU sweep, no scheduler, on an embedded local Ray with --cores CPUs (one per trial):
     scheduling efficiency = (sum of trial compute seconds) / (sweep wall seconds x cores), where a
     trial's compute seconds are its run's own duration_seconds (metrics.json);
  B. the same 16 runs as a plain sequential loop of psann.runs.execute_run in this process
     (one torch thread), for reference;
  C. the same 16 configs under ASHA (max_t = the epochs, grace_period = epochs // 9 or
     --grace-period, reduction_factor 3): total epochs spent and best val_loss found, against run A.

Writes bench/reports/sweep_overhead.md (and .json) and prints the figures.

    python bench/sweep_overhead.py                 # ~20 s trials (about 10-15 minutes on 2 cores)
    python bench/sweep_overhead.py --quick         # ~4 s trials, a few minutes
    python bench/sweep_overhead.py --trial-seconds 30 --cores 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LRS = [0.0003, 0.001, 0.003, 0.01]
W0S = [0.5, 1.0, 3.0, 10.0]
RUN_CONFIG: dict[str, Any] = {
    "estimator": {
        "target": "psann.PSANNRegressor",
        "params": {"hidden_layers": 2, "hidden_units": 32, "epochs": 10, "lr": 0.003, "w0": 1.0, "device": "cpu"},
    },
    "hisso": {"enabled": True, "window": 32, "batch_episodes": 32, "updates_per_epoch": 64,
              "primary_transform": "softmax", "transition_penalty": 0.001, "reward": "portfolio"},
    "data": {"loader": "psann.data.regime_market_dataset", "kwargs": {"steps": 1200, "assets": 4, "features": 8, "seed": 0}},
    "training": {"verbose": 0},
    "evaluation": {"portfolio_prices_key": "prices_test", "trans_cost": 0.001},
}


def _configs() -> list[dict[str, Any]]:
    return [{"estimator.params.lr": lr, "estimator.params.w0": w0} for lr in LRS for w0 in W0S]


def calibrate(work: Path, target_s: float) -> tuple[int, float, float]:
    """Epochs that make one run last about ``target_s``: (epochs, fixed seconds, seconds per epoch)."""
    import torch

    from psann.runconfig import apply_overrides, parse_run_config
    from psann.runs import execute_run

    torch.set_num_threads(1)  # as in a Ray trial holding one CPU
    probe_epochs = 6
    raw = apply_overrides(RUN_CONFIG, {"estimator.params.epochs": probe_epochs})
    run_dir = work / "calibrate"
    run_dir.mkdir()
    result = execute_run(parse_run_config(raw), run_dir, seed=0)
    import csv

    with open(run_dir / "events.csv", newline="") as handle:
        epochs = [float(r["elapsed_seconds"]) for r in csv.DictReader(handle) if r["event"] == "epoch"]
    per_epoch = (epochs[-1] - epochs[0]) / (len(epochs) - 1)
    fixed = max(0.0, result.metrics["duration_seconds"] - per_epoch * probe_epochs)
    return max(3, round((target_s - fixed) / per_epoch)), fixed, per_epoch


def run_tune(work: Path, name: str, epochs: int, cores: int, scheduler: Any) -> dict[str, Any]:
    """One stage of 16 trials on the running local Ray; wall time and per-trial facts."""
    from sweeps.spec import parse_sweep
    from sweeps.stages import run_sweep

    folder = work / name
    folder.mkdir()
    (folder / "run.yaml").write_text(yaml.safe_dump(RUN_CONFIG, sort_keys=False))
    raw = {
        "name": name,
        "base_config": "run.yaml",
        "search_space": {"estimator.params.lr": {"grid": LRS}, "estimator.params.w0": {"grid": W0S}},
        "stages": [{"name": "bench", "resources": {"cpu": 1, "gpu": 0}, "num_samples": 1, "epochs": epochs,
                    "scheduler": scheduler, "max_concurrent_trials": cores, "max_failures": 0,
                    "pass_rule": {"min_success_fraction": 0.0}}],
    }
    spec = parse_sweep(raw, path=folder / "sweep.yaml")
    started = time.perf_counter()
    (result,) = run_sweep(spec, folder / "out", verbose=0)
    wall = time.perf_counter() - started
    trials = []
    for trial in result.trials:
        metrics = json.loads((folder / "out" / "bench" / trial.trial_dir / "metrics.json").read_text())
        trials.append({"params": trial.params, "outcome": trial.outcome, "epochs": trial.iterations,
                       "compute_s": metrics["duration_seconds"], "val_loss": metrics["val_loss"]})
    return {"wall_s": wall, "trials": trials}


def run_sequential(work: Path, epochs: int) -> dict[str, Any]:
    import torch

    from psann.runconfig import apply_overrides, parse_run_config
    from psann.runs import execute_run

    torch.set_num_threads(1)  # the same one core a Ray trial with cpu: 1 gets
    trials = []
    started = time.perf_counter()
    for i, overrides in enumerate(_configs()):
        raw = apply_overrides(RUN_CONFIG, {**overrides, "estimator.params.epochs": epochs})
        run_dir = work / "sequential" / f"run_{i:02d}"
        run_dir.mkdir(parents=True)
        result = execute_run(parse_run_config(raw), run_dir, seed=42)  # the sweep's default seed
        trials.append({"params": overrides, "compute_s": result.metrics["duration_seconds"],
                       "val_loss": result.metrics["val_loss"], "epochs": result.metrics["epochs_run"]})
    return {"wall_s": time.perf_counter() - started, "trials": trials}


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trial-seconds", type=float, default=20.0, help="compute seconds per trial (default 20)")
    parser.add_argument("--quick", action="store_true", help="~4 s trials: a smoke run of the benchmark")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--grace-period", type=int, default=None, help="ASHA grace period (default: epochs // 9)")
    parser.add_argument("--skip-sequential", action="store_true", help="leave out run B")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "reports" / "sweep_overhead.md")
    args = parser.parse_args(argv)
    target = 4.0 if args.quick else args.trial_seconds

    import ray

    work = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    load_before = os.getloadavg()
    try:
        epochs, fixed_s, per_epoch_s = calibrate(work, target)
        print(f"calibration: {per_epoch_s:.3f} s/epoch + {fixed_s:.2f} s fixed -> {epochs} epochs per trial", flush=True)
        grace = args.grace_period or max(1, epochs // 9)
        ray.init(address="local", num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        try:
            plain = run_tune(work, "plain", epochs, args.cores, "none")
            print(f"A. sweep, no scheduler: wall {plain['wall_s']:.1f} s", flush=True)
            asha = run_tune(work, "asha", epochs, args.cores,
                            {"type": "asha", "max_t": epochs, "grace_period": grace, "reduction_factor": 3})
            print(f"C. sweep, ASHA: wall {asha['wall_s']:.1f} s", flush=True)
        finally:
            ray.shutdown()
        sequential = None if args.skip_sequential else run_sequential(work, epochs)
        if sequential:
            print(f"B. sequential loop: wall {sequential['wall_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    compute = sum(t["compute_s"] for t in plain["trials"])
    efficiency = compute / (plain["wall_s"] * args.cores)
    epochs_plain = sum(t["epochs"] for t in plain["trials"])
    epochs_asha = sum(t["epochs"] for t in asha["trials"])
    best_plain = min(t["val_loss"] for t in plain["trials"] if t["val_loss"] is not None)
    best_asha = min(t["val_loss"] for t in asha["trials"] if t["val_loss"] is not None)
    rel_gap = abs(best_asha - best_plain) / abs(best_plain) if best_plain else float("nan")
    pruned = sum(1 for t in asha["trials"] if t["outcome"] == "PRUNED")
    figures = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "mode": "quick" if args.quick else "full",
        "cores": args.cores,
        "trials": len(plain["trials"]),
        "epochs_per_trial": epochs,
        "target_trial_seconds": target,
        "A_wall_s": round(plain["wall_s"], 2),
        "A_trial_compute_s_sum": round(compute, 2),
        "A_trial_compute_s_mean": round(compute / len(plain["trials"]), 2),
        "A_scheduling_efficiency": round(efficiency, 3),
        "B_sequential_wall_s": round(sequential["wall_s"], 2) if sequential else None,
        "B_sequential_compute_s_sum": round(sum(t["compute_s"] for t in sequential["trials"]), 2) if sequential else None,
        # A Tune trial's run does the same epochs plus a tune.report and a checkpoint per epoch.
        "A_trial_vs_sequential_run_duration": round(compute / sum(t["compute_s"] for t in sequential["trials"]), 3) if sequential else None,
        "sweep_speedup_over_sequential": round(sequential["wall_s"] / plain["wall_s"], 2) if sequential else None,
        "C_asha_wall_s": round(asha["wall_s"], 2),
        "C_asha_grace_period": grace,
        "C_asha_pruned_trials": pruned,
        "epochs_no_scheduler": epochs_plain,
        "epochs_asha": epochs_asha,
        "asha_epoch_fraction": round(epochs_asha / epochs_plain, 3),
        "best_val_loss_no_scheduler": best_plain,
        "best_val_loss_asha": best_asha,
        "best_val_loss_relative_gap": round(rel_gap, 4),
    }
    lines = [
        "# Sweep overhead (bench/sweep_overhead.py)",
        "",
        f"{figures['date_utc']}, {figures['machine']}, mode {figures['mode']}, local Ray with {args.cores} CPUs, "
        f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after.",
        f"16 trials (lr x w0 grid), dense PSANN HISSO on regime_market_dataset(1200 steps), {epochs} epochs "
        f"(~{target:g} s of compute) each, 1 CPU per trial.",
        "",
        "| run | wall s | trial compute s (sum) | figure |",
        "|---|---|---|---|",
        f"| A. Tune sweep, no scheduler | {plain['wall_s']:.1f} | {compute:.1f} | scheduling efficiency "
        f"{efficiency:.3f} = compute / (wall x {args.cores}) |",
        f"| B. sequential execute_run loop | {_fmt(figures['B_sequential_wall_s'], '.1f')} | "
        f"{_fmt(figures['B_sequential_compute_s_sum'], '.1f')} | sweep is {_fmt(figures['sweep_speedup_over_sequential'], '.2f')}x faster |",
        f"| (A / B per-run duration: {_fmt(figures['A_trial_vs_sequential_run_duration'], '.2f')}, the cost of a "
        "report + checkpoint per epoch inside the trial) | | | |",
        f"| C. Tune sweep, ASHA (grace {grace}, rf 3) | {asha['wall_s']:.1f} | "
        f"{sum(t['compute_s'] for t in asha['trials']):.1f} | {pruned} of 16 pruned |",
        "",
        "| | no scheduler (A) | ASHA (C) |",
        "|---|---|---|",
        f"| epochs spent | {epochs_plain} | {epochs_asha} ({epochs_asha / epochs_plain:.0%}) |",
        f"| best val_loss | {best_plain:.5f} | {best_asha:.5f} (gap {rel_gap:.1%}) |",
        "",
    ]
    text = "\n".join(lines)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    args.report.with_suffix(".json").write_text(json.dumps(figures, indent=2) + "\n")
    print(text)
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
