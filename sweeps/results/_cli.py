"""`python -m sweeps.results {ingest,query,summary,export}`.

Exit codes (psann.contract): 0 success; 2 bad input (arguments, a bad filter, sort key or SQL
statement, an unknown column or stage, a path without tables); 1 failure (the tables disagree
with a trial folder, DuckDB is missing); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import pyarrow as pa

from psann.contract import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK
from psann.errors import ValidationError

from ._best import export_best, exported_command as best_command
from ._ingest import ingest_sweep
from ._lock import DEFAULT_LOCK_TIMEOUT_S
from ._query import CONFIG_COLUMNS, query, sql, summary
from ._render import csv_text, format_table, json_text
from ._schema import SchemaConflictError

# Shown by `query --format table` when no --columns are given (the table has ~80 columns),
# followed by up to six parameters that vary between the rows shown.
DEFAULT_TABLE_COLUMNS = (
    "stage", "trial_id", "status", "val_loss_smoothed", "val_loss", "best_epoch", "train_loss", "test_loss",
    "eval_split", "reward_mean", "throughput_eps_per_sec", "throughput_samples_per_sec", "duration_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.results",
        description="Gather sweep trial folders into Parquet tables and query them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="read a sweep folder into <sweep>/tables/")
    p.add_argument("path", help="sweep folder (or a folder of run folders); local path or URI")
    p.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT_S, metavar="SECONDS",
                   help="wait this long for another ingest of the same (local) sweep to finish "
                        f"(default {DEFAULT_LOCK_TIMEOUT_S:g}; 0: fail at once)")

    p = sub.add_parser("query", help="filter, sort and print a results table")
    p.add_argument("path", help="sweep folder that holds tables/ (or the tables folder)")
    p.add_argument("--table", choices=("trials", "events", "equity"), default="trials")
    p.add_argument("--stage", action="append", help="only this stage (repeatable)")
    p.add_argument("--where", help="a DuckDB SQL condition on each row, e.g. "
                                   "\"val_loss < 0.5 and status == 'SUCCESS'\"")
    p.add_argument("--sort", action="append", help="sort by this column (repeatable or a,b)")
    p.add_argument("--descending", "--desc", action="store_true", help="sort largest first")
    p.add_argument("--top", type=int, help="keep the first N rows (after sorting); without --sort, "
                                           "the N best trials by the ranking rule (val_loss_smoothed)")
    p.add_argument("--by-config", action="store_true",
                   help="one row per (stage, config_id): mean and std of val_loss_smoothed over "
                        "the repeats of the trials kept by --stage/--where, best first")
    p.add_argument("--columns", action="append",
                   help="columns to print (repeatable or comma-separated); default: all "
                        "(a compact set for --format table)")
    p.add_argument("--sql", help="one read-only DuckDB SELECT over the tables `trials`, "
                                 "`events` and `equity`; replaces the other query flags")
    _add_format(p)

    p = sub.add_parser("summary", help="per-stage status counts and the best trial")
    p.add_argument("path", help="sweep folder that holds tables/")
    _add_format(p)

    p = sub.add_parser("export", help="write the best trial's checkpoint and a run config that reruns it")
    p.add_argument("path", help="sweep folder that holds tables/; local path or URI")
    p.add_argument("--out", required=True, help="folder to write (new, or empty): checkpoint/, config.yaml, "
                                                "export.json")
    p.add_argument("--stage", help="the stage whose best trial is exported (default: the last stage "
                                   "with a ranked trial)")
    p.add_argument("--rank", type=int, default=1, help="export the N-th best instead (default 1)")
    return parser


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "ingest":
            report = ingest_sweep(args.path, lock_timeout_s=args.lock_timeout)
            print(
                f"{report.sweep}: {report.trials_added} trials added, {report.trials_updated} "
                f"updated, {report.trials_removed} removed, {report.trials_unchanged} unchanged; "
                f"{report.events_added:+d} event rows; {report.equity_added:+d} equity rows; "
                f"{report.incomplete} incomplete; "
                f"tables in {report.tables_path} ({report.duration_seconds:.1f} s)"
            )
            for warning in report.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            return EXIT_OK
        if args.command == "summary":
            _print(summary(args.path), args.format)
            return EXIT_OK
        if args.command == "export":
            best = export_best(args.path, args.out, stage=args.stage, rank=args.rank)
            print(f"{best.stage}/{best.trial_id} (rank {best.rank}, {best.checkpoint}, epoch "
                  f"{best.checkpoint_epoch}) exported to {args.out}")
            print(f"rerun: {best_command(args.out)}")
            return EXIT_OK
        if args.sql is not None:
            used = [f"--{n}" for n in ("stage", "where", "sort", "top", "columns")
                    if getattr(args, n) not in (None, False)]
            used += ["--by-config"] if args.by_config else []
            if used or args.descending or args.table != "trials":
                parser.error(f"--sql replaces the other query flags; drop {', '.join(used) or '--table/--descending'}")
            _print(sql(args.path, args.sql), args.format)
            return EXIT_OK
        columns = _split(args.columns)
        table = query(
            args.path,
            stage=args.stage,
            where=args.where,
            sort=_split(args.sort),
            descending=args.descending,
            top=args.top,
            columns=columns,
            table=args.table,
            by_config=args.by_config,
        )
        if columns is None and args.format == "table" and args.table == "trials":
            fixed = [n for n, _ in CONFIG_COLUMNS] if args.by_config else DEFAULT_TABLE_COLUMNS
            shown = [c for c in fixed if c in table.column_names]
            table = table.select(shown + _varying_params(table)[:6])
        _print(table, args.format)
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SchemaConflictError as exc:  # the data disagrees with the tables: not the user's input
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (ValidationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _varying_params(table: pa.Table) -> list[str]:
    """params_* columns whose value differs between the rows shown (the swept ones)."""
    varying = []
    for name in table.column_names:
        if name.startswith("params_") and len(set(table[name].to_pylist())) > 1:
            varying.append(name)
    return varying


def _print(table: pa.Table, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(csv_text(table))
    elif fmt == "json":
        sys.stdout.write(json_text(table))
    else:
        sys.stdout.write(format_table(table) + "\n")
