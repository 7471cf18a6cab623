"""Markdown helpers of the compendium: value formatting, tables, and writing files only when changed."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable, Sequence


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: 4 significant digits for floats, "–" for missing, pipes escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def mean_std(value: float | None, std: float | None) -> str:
    """``0.1234 ± 0.005`` (or just the value when there is no spread to show)."""
    if value is None:
        return "–"
    return fmt(value) if std is None else f"{fmt(value)} ± {fmt(std)}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def last_line(text: str | None) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[-1]
    return line if len(line) <= 160 else line[:159] + "…"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return  # unchanged: keep the file (and its mtime) as it is
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
