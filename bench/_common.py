"""Shared helpers of the bench scripts: machine facts, medians, markdown + JSON reports."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "bench" / "reports"


def machine(threads: int) -> dict[str, Any]:
    """What the figures were measured on; a benchmark figure without this is meaningless."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(name: str, title: str, body: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write bench/reports/<name>.md and <name>.json; return both paths."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    md_path, json_path = REPORTS / f"{name}.md", REPORTS / f"{name}.json"
    md_path.write_text(f"# {title}\n\n{body.rstrip()}\n")
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return md_path, json_path


def machine_line(info: dict[str, Any]) -> str:
    device = f", GPU {info['gpu']}" if info.get("gpu") else ", CPU only (no CUDA)"
    load = info.get("load_average_at_start")
    load_text = f", load average at start {load[0]:.2f}" if load else ""
    return (
        f"machine: {info['processor']}, {info['cpu_count']} CPU(s){device}; torch {info['torch']} with "
        f"{info['torch_threads']} thread(s); Python {info['python']}{load_text}; measured {info['utc']}"
    )
