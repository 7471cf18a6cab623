"""Run a staged PSANN/HISSO sweep on Ray Tune: CPU smoke trials first, GPU trials last.

    python sweeps/hisso_wave.py                          # default sweep on an embedded local Ray
    python sweeps/hisso_wave.py --address auto           # join the running cluster (e.g. on the head)
    python sweeps/hisso_wave.py --dry-run                # validate and print the plan, start nothing
    python sweeps/hisso_wave.py --dry-run --cluster cluster/runpod.yaml   # ... with GPU hours and cost
    python sweeps/hisso_wave.py --name my-sweep --resume # continue an interrupted sweep

Exit codes (``psann.contract``, the project's one rule): 0 every stage passed (EXIT_OK); 1 a stage
failed its pass rule (EXIT_FAILURE); 2 bad arguments or sweep file (EXIT_BAD_INPUT); 3 a GPU stage
could not get a GPU, pass --allow-cpu to run it on CPU (EXIT_NO_GPU); 130 interrupted with Ctrl-C
(EXIT_INTERRUPTED): continue with --resume --name <sweep folder name>.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from psann._imports import TRUST_ENV, trust
from psann.contract import (
    EVALUATION_FILE,
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NO_GPU,
    EXIT_OK,
    RANK_WINDOW,
    baseline_verdict,
)
from psann.errors import ValidationError
from psann.names import check_folder_name, check_output_dir
from sweeps.budget import describe_estimates, estimate_stage, find_smoke_epoch_seconds, load_gpu_price, smoke_stage
from sweeps.spec import SweepError, SweepSpec, available_profiles, describe_plan, load_sweep, validate_trial_configs
from sweeps.storage import SweepStore

DEFAULT_SWEEP = Path(__file__).resolve().parent.parent / "configs" / "sweeps" / "hisso_wave.yaml"

logger = logging.getLogger("sweeps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python sweeps/hisso_wave.py",
        description="Staged Ray Tune sweep of PSANN/HISSO runs: smoke (CPU) stages gate GPU stages; "
        "ASHA prunes on val_loss; every trial folder holds metrics.json and events.csv; results are "
        "gathered into Arrow tables at the end of each stage.",
    )
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP,
                        help="sweep file (default: configs/sweeps/hisso_wave.yaml)")
    parser.add_argument("--address", default=None,
                        help="join an existing Ray cluster (e.g. auto); default: start Ray embedded and local")
    parser.add_argument("--storage", default="runs/sweeps",
                        help="results root, a local path or a pyarrow filesystem URI (s3://bucket/sweeps, "
                        "file:///mnt/vol/sweeps); the sweep folder is <storage>/<name> (default: runs/sweeps)")
    parser.add_argument("--name", default=None,
                        help="sweep folder name (default: <sweep name>-<UTC timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep (--name, or the newest folder of this sweep): "
                        "finished trials are not re-run, unfinished ones continue from their checkpoints")
    parser.add_argument("--stages", default=None,
                        help="comma-separated subset of stages to run, in file order (e.g. smoke)")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run GPU stages on CPU when the cluster has no GPU (recorded in stage_status.json)")
    parser.add_argument("--profile", default=None,
                        help="sweep-file profile to apply (default: 'local' when Ray is embedded and the "
                        "file defines it; 'none' disables profiles)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the embedded local Ray (default: all cores)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the sweep file and every trial config, print the plan with an estimate "
                        "of GPU hours, start nothing")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE",
                        help="let the sweep's run configs name callables in MODULE (and its submodules), e.g. "
                        "--trust my_lab.rewards; repeatable. A config that names a callable runs it: only "
                        "psann's and sweeps' own are trusted by default (also PSANN_TRUST=mod_a,mod_b). "
                        "The trials get the same trust")
    parser.add_argument("--cluster", type=Path, default=None,
                        help="Ray cluster file (e.g. cluster/runpod.yaml) whose GPU worker type's "
                        "estimated_cost_per_hour prices the estimate")
    return parser


def _pick_profile(args: argparse.Namespace) -> str | None:
    if args.profile == "none":
        return None
    if args.profile is not None:
        return args.profile
    if args.address is None and "local" in available_profiles(args.sweep):
        return "local"
    return None


def _check_storage(location: str) -> None:
    """A URI must name its bucket or host (``s3://`` alone would write at the filesystem's root);
    a local path must be a folder this user can write (or create)."""
    if "://" in location:
        scheme, _, rest = location.partition("://")
        if scheme != "file" and not rest.split("/", 1)[0]:
            raise SweepError("--storage", f"expected a URI with a bucket or host ({scheme}://bucket/path), got {location!r}")
        if scheme == "file":
            check_output_dir(rest or "/", "--storage")
    else:
        check_output_dir(location, "--storage")


def _sweep_store(args: argparse.Namespace, sweep_name: str) -> SweepStore:
    _check_storage(str(args.storage))
    if args.name is not None:
        check_folder_name(args.name, "--name")
    try:
        storage = SweepStore(args.storage)
        storage.exists()
    except (OSError, ValueError) as exc:  # pyarrow raises OSError (unreachable) or ArrowInvalid
        raise SweepError("--storage", f"cannot open {args.storage!r}: {exc}") from exc
    if args.name:
        return SweepStore(storage.uri_of(args.name))
    if args.resume:
        # Folder names end in a UTC timestamp, so the newest sorts last.
        candidates = [n for n in storage.child_dirs() if n.startswith(f"{sweep_name}-") and storage.exists(n, "sweep.json")]
        if not candidates:
            raise SweepError("--resume", f"no sweep folder of {sweep_name!r} under {storage} to resume; pass --name")
        return SweepStore(storage.uri_of(sorted(candidates)[-1]))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return SweepStore(storage.uri_of(f"{sweep_name}-{stamp}"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep CLI; returns the exit code (argparse exits 2 itself on unknown flags)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C outside a stage (reading the sweep file, starting Ray); inside one, Tune saves its
        # state and run_sweep raises StageInterruptedError instead.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        trust(args.trust, key="--trust")
        profile = _pick_profile(args)
        spec = load_sweep(args.sweep, profile=profile)
        stages = None
        if args.stages:
            stages = [s.strip() for s in args.stages.split(",") if s.strip()]
            for name in stages:
                spec.stage(name)
        checked = validate_trial_configs(spec)
        sweep_dir = _sweep_store(args, spec.name)
        if args.resume and not sweep_dir.exists("sweep.json"):
            raise SweepError("--resume", f"{sweep_dir} holds no sweep to resume (no sweep.json)")
        if not args.resume and sweep_dir.exists("sweep.json"):
            raise SweepError("--name", f"{sweep_dir} already holds a sweep; pass --resume to continue it or pick another --name")
        price = load_gpu_price(args.cluster, SweepError) if args.cluster is not None else None
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    plan = describe_plan(spec) + _estimate(spec, args, sweep_dir, price)
    if args.dry_run:
        print("\n".join(plan))
        print(f"validated {checked} trial config(s); sweep folder would be {sweep_dir}")
        return EXIT_OK
    for line in plan:
        logger.info("%s", line)

    import ray

    from sweeps.stages import GPUUnavailableError, StageInterruptedError, format_summary, run_sweep

    if args.address:
        # Trials import what their configs name: on a cluster's nodes they get this driver's trust
        # through the job's runtime env (an embedded Ray's workers inherit this process's env).
        trusted = os.environ.get(TRUST_ENV)
        runtime_env = {"env_vars": {TRUST_ENV: trusted}} if trusted else None
        ray.init(address=args.address, log_to_driver=True, runtime_env=runtime_env)
    else:
        ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False)
    try:
        results = run_sweep(spec, sweep_dir, stages=stages, allow_cpu=args.allow_cpu, resume=args.resume,
                            gpu_price=price)
    except GPUUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NO_GPU
    except StageInterruptedError as exc:
        print(f"interrupted: {exc}:\n  {_resume_command(argv, sweep_dir.name)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        ray.shutdown()
    print()
    print(format_summary(results, sweep_dir.uri_of("tables") if sweep_dir.exists("tables") else None, sweep_dir))
    print(f"sweep folder: {sweep_dir}")
    _print_best(results, sweep_dir)
    return EXIT_OK if results and all(r.passed for r in results) else EXIT_FAILURE


def _estimate(spec: SweepSpec, args: argparse.Namespace, sweep_dir: SweepStore, price) -> list[str]:
    """The plan's spend estimate: epoch seconds from the sweep file, else from this sweep's smoke
    stage on disk (this --name first, then the newest folder of this sweep under --storage)."""
    smoke = smoke_stage(spec)
    measured = None
    if smoke is not None and any(s.wants_gpu and s.epoch_seconds is None for s in spec.stages):
        measured = find_smoke_epoch_seconds(SweepStore(args.storage), spec.name, smoke.name, prefer=sweep_dir.name)
    return describe_estimates([estimate_stage(spec, s, measured) for s in spec.stages], price,
                              smoke.name if smoke else None)


def _resume_command(argv: Sequence[str] | None, name: str) -> str:
    """The command line that continues this sweep: the same arguments plus --name and --resume."""
    words, skip = [], False
    for word in list(sys.argv[1:] if argv is None else argv):
        if skip:
            skip = False
        elif word == "--name":
            skip = True
        elif not word.startswith("--name=") and word != "--resume":
            words.append(word)
    return " ".join(["python sweeps/hisso_wave.py", *words, "--name", name, "--resume"])


def _print_best(results, sweep_dir: SweepStore) -> None:
    """End with the winner: the last stage's best trial by the ranking rule, with its test figures.

    The figures come from the trial's evaluation.json (its best checkpoint evaluated on the test
    split after the stage), so a pruned winner has them too; a failed evaluation is said, never
    left out silently.
    """
    for result in reversed(results):
        best = result.best()
        if best is None:
            continue
        where = sweep_dir.uri_of(result.stage, best.trial_dir)
        print(f"best trial of stage {result.stage}: {best.trial_id} ({best.outcome.lower()}, {where})")
        metrics = sweep_dir.read_json(result.stage, best.trial_dir, "metrics.json") or {}
        evaluation = sweep_dir.read_json(result.stage, best.trial_dir, EVALUATION_FILE)
        print(f"  val_loss_smoothed={best.val_loss_smoothed:.5g} (mean of the last {_rank_window(sweep_dir)} epochs) "
              f"val_loss_min={_fmt(metrics.get('val_loss'))} epochs_run={metrics.get('epochs_run')} "
              f"device={metrics.get('device')}")
        if not isinstance(evaluation, dict):
            print("  test: no evaluation.json (top_k: 0 in the sweep file?)")
            return
        if evaluation.get("error"):
            print(f"  test: the evaluation failed: {str(evaluation['error']).strip().splitlines()[-1]}")
            return
        print(f"  {evaluation.get('split')} from {evaluation.get('checkpoint')} (epoch {evaluation.get('checkpoint_epoch')}): "
              f"test_loss={_fmt(evaluation.get('test_loss'))} test_mse={_fmt(evaluation.get('test_mse'))} "
              f"test_reward_full={_fmt(evaluation.get('test_reward_full'))}")
        portfolio = evaluation.get("portfolio") or {}
        for name in ("policy", "equal_weight", "best_buy_and_hold"):
            m = portfolio.get(name)
            if m:
                print(f"  {portfolio.get('split', 'test')} {name:<18} log_return={m['log_return']:+.4f} "
                      f"cum_return={m['cum_return']:+.4f} sharpe={m['sharpe']:.3f} max_drawdown={m['max_drawdown']:.3f} "
                      f"turnover={m['turnover']:.3f}")
        verdict = baseline_verdict(*((portfolio.get(n) or {}).get("log_return")
                                     for n in ("policy", "equal_weight", "best_buy_and_hold")),
                                   split=portfolio.get("split") or "test")
        if verdict:
            print(f"  {verdict}")
        return


def _fmt(value) -> str:
    return f"{value:.5g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _rank_window(sweep_dir: SweepStore) -> int:
    record = sweep_dir.read_json("sweep.json") or {}
    return int(record.get("rank_window", RANK_WINDOW))


if __name__ == "__main__":
    sys.exit(main())
