"""`python -m sweeps.compendium PATH [PATH ...] [--out docs/results] [--ingest]`.

Exit codes (``psann.contract``): 0 every page written; 2 bad input (a path without tables, a
folder that is not a sweep, trials whose values conflict in type), one line on stderr; 130
interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from psann.contract import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK

from ..results import SchemaConflictError, ingest_sweep
from ._pages import build_compendium


def main(argv: Sequence[str] | None = None) -> int:
    """Build the pages; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.compendium",
        description="Write a markdown page with tables and plots per sweep, and an index page.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="sweep folder(s) with tables/")
    parser.add_argument("--out", default="docs/results", help="output folder (default: docs/results)")
    parser.add_argument("--ingest", action="store_true",
                        help="ingest each sweep first (python -m sweeps.results ingest)")
    args = parser.parse_args(argv)
    try:
        for path in args.paths:
            if args.ingest:
                ingest_sweep(path)
            written = build_compendium(path, args.out)
            print(f"{path}: wrote {', '.join(str(p) for p in written)}")
    except (FileNotFoundError, ValueError, SchemaConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
