"""Command line: `python -m cluster.runpod check cluster/runpod.yaml`.

Exit codes: 0 the file is valid (its plan is printed), 2 a bad file or bad arguments
(the message names the offending key path).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from cluster.runpod._check import ConfigError, check_config, load_config


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.runpod",
        description="Tools for Ray clusters on RunPod (see docs/cluster.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="validate a ray cluster file for RunPod and print its plan; starts nothing",
    )
    check.add_argument("config", help="cluster launcher YAML, e.g. cluster/runpod.yaml")
    args = parser.parse_args(argv)

    try:
        plan = check_config(load_config(args.config))
    except ConfigError as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.config}: valid (Ray schema and RunPod node configs)")
    print(plan.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
