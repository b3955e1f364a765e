"""Plain-text tables for the benchmark scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def format_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned Markdown table (readable in a terminal and pasteable into the README)."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False)) + " |",
        "| " + " | ".join("-" * w for w in widths) + " |",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + " |" for r in cells]
    return "\n".join(lines)


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    print(format_table(rows, columns))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    return str(value)
