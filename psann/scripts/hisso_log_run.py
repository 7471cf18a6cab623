"""Run one HISSO (or supervised) config and log everything into a run folder.

    python -m psann.scripts.hisso_log_run --config configs/hisso/dense_cpu_smoke.yaml --output-dir runs/hisso

Exit codes (``psann.contract``, the same rule as every CLI of the project): 0 success
(EXIT_OK), 1 the run failed (EXIT_FAILURE; metrics.json holds the traceback), 2 bad arguments,
config or dataset (EXIT_BAD_INPUT; one line naming the key), 124 hung: nothing written for
``--hang-timeout`` seconds (EXIT_HUNG; metrics.json status "hung"), 130 interrupted (EXIT_INTERRUPTED).
The folder contract is docs/run_outputs.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from psann._imports import trust
from psann.contract import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, baseline_verdict
from psann.data import check_seed, regime_market_dataset, toy_hisso_dataset
from psann.errors import ValidationError
from psann.names import NAME_MAX, check_folder_name, check_output_dir
from psann.runconfig import ConfigError
from psann.runs import execute_run, load_dataset, load_run_config, prepare_run_dir
from psann.watchdog import RunWatchdog

__all__ = ["main", "build_parser", "toy_hisso_dataset", "regime_market_dataset"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m psann.scripts.hisso_log_run",
        description="Run one PSANN/HISSO config and write metrics.json, events.csv, config_resolved.yaml "
        "and checkpoints/ into a fresh run folder.",
        epilog="example: python -m psann.scripts.hisso_log_run --config configs/hisso/dense_cpu_smoke.yaml "
        "--output-dir runs/hisso --seed 7",
    )
    parser.add_argument("--config", required=True, type=Path,
                        help="run config, YAML or JSON (e.g. configs/hisso/wave_resnet_cpu_smoke.yaml)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/hisso"),
                        help="parent folder of run folders (default: runs/hisso)")
    parser.add_argument("--run-name", default=None,
                        help="run folder name (default: <config stem>-<UTC timestamp>); an existing folder is "
                        "never reused: a -1, -2, ... suffix is added")
    parser.add_argument("--device", default=None,
                        help="override estimator.params.device: cpu, cuda, cuda:0 or auto (e.g. --device cpu)")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed used when the config sets no estimator.params.random_state (default: 42)")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="also keep checkpoints/epoch_NNNN for every epoch (best and warm start are always kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for the run (default: torch's own choice), e.g. --threads 1")
    parser.add_argument("--hang-timeout", type=float, default=None, metavar="SECONDS",
                        help="end the run as hung (metrics.json status hung, exit 124) when it writes nothing "
                        "(no events.csv row, no log line) for this many seconds, e.g. --hang-timeout 600 "
                        "(default: no limit)")
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE",
                        help="let the config name callables in MODULE (and its submodules), e.g. --trust my_lab.rewards; "
                        "repeatable. A config that names a callable runs it: only psann's own are trusted by default "
                        "(also PSANN_TRUST=mod_a,mod_b)")
    parser.add_argument("--verbose", action="store_true", help="console logging at DEBUG instead of INFO")
    return parser


def _one_line(message: object) -> str:
    """Bad-input errors are one line (YAML parser messages span several)."""
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (argparse exits 2 itself on unknown flags).

    With ``--hang-timeout`` a hung run does not return: the watchdog thread records it and ends
    the process with EXIT_HUNG (psann.watchdog).
    """
    args = build_parser().parse_args(argv)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        trust(args.trust, key="--trust")
        check_output_dir(args.output_dir, "--output-dir")
        if args.run_name is not None:
            check_folder_name(args.run_name, "--run-name", parent=args.output_dir, reserve=len("-999"))
        check_seed(args.seed, "--seed", error=ConfigError)
        if args.threads is not None and args.threads < 1:
            raise ConfigError("--threads", f"expected an int >= 1, got {args.threads}")
        if args.hang_timeout is not None and not (math.isfinite(args.hang_timeout) and args.hang_timeout > 0):
            raise ConfigError("--hang-timeout", f"expected seconds > 0, got {args.hang_timeout:g}")
        config = load_run_config(args.config)
        if args.run_name is None and len(f"{args.config.stem}-{stamp}-999".encode()) > NAME_MAX:
            raise ConfigError("--run-name", f"the default run name (the config file's name and a timestamp) is longer "
                              f"than {NAME_MAX} bytes; pass a shorter --run-name")
        from psann.estimators import resolve_device

        # The run CLI runs here: a CUDA device this host lacks is bad input now, not a failed run later.
        # (In sweeps the device comes from Ray's grant and is checked in the trial.)
        device, device_key = (args.device, "--device") if args.device is not None else (
            config.estimator_params.get("device", "auto"), "estimator.params.device")
        try:
            resolve_device(device)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(device_key, str(getattr(exc, "reason", exc))) from exc
        try:
            dataset = load_dataset(config)
        except ConfigError:
            raise
        except Exception:
            # A loader that crashes is a failed run, not bad input: execute_run loads the data again
            # inside its error handling, so metrics.json and events.csv record the traceback (exit 1).
            dataset = None
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Before the run folder exists: nothing to flush (execute_run handles Ctrl-C after this).
        print("interrupted before the run started", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run_name = args.run_name or f"{args.config.stem}-{stamp}"
    try:
        run_dir = prepare_run_dir(args.output_dir, run_name)
        with contextlib.ExitStack() as watched:
            if args.hang_timeout is not None:
                # The clock starts with the run; a hung run never returns from here (psann.watchdog).
                watched.enter_context(RunWatchdog(run_dir, args.hang_timeout, flag="--hang-timeout"))
            result = execute_run(
                config,
                run_dir,
                dataset=dataset,
                device=args.device,
                seed=args.seed,
                keep_checkpoints=args.keep_checkpoints or None,
                console=True,
                verbose=args.verbose,
            )
    except OSError as exc:
        # The storage failed under the run (a full disk, a quota, a folder made read-only): the run
        # cannot even record its failure. Every file is written atomically, so what was written
        # before is intact; say so in one line. An empty run folder is removed.
        return _storage_failure(exc, locals().get("run_dir"))
    portfolio = result.metrics.get("portfolio") or {}
    verdict = baseline_verdict(*(  # a plain line, so nobody reads it off the signs of numbers
        (portfolio.get(name) or {}).get("log_return") for name in ("policy", "equal_weight", "best_buy_and_hold")),
        split=portfolio.get("split") or "test")
    if verdict:
        print(verdict)
    print(f"{result.status}: {result.run_dir}")  # always the last line
    return result.exit_code


def _storage_failure(exc: OSError, run_dir: Path | None) -> int:
    where = exc.filename or run_dir or "the output folder"
    print(f"error: cannot write {where}: {exc.strerror or exc} (errno {exc.errno}); files written before are intact",
          file=sys.stderr)
    if run_dir is not None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
