"""The numbers and tables every load-test report shares: percentiles of latencies and
Markdown tables.

Typical usage::

    percentiles([1.2, 3.4, 2.2])          # {"p50_ms": 2.2, "p95_ms": ..., "mean_ms": ...}
    print("\n".join(table(["door", "p99 ms"], [["grpc", fmt(3.14)]], align="lr")))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values``, or None when there are none."""
    return float(np.percentile(values, q)) if len(values) else None


def percentiles(ms: Sequence[float]) -> dict[str, float | None]:
    """``p50_ms``, ``p95_ms``, ``p99_ms`` and ``mean_ms`` of latencies in milliseconds (None
    each when there are none)."""
    values = np.asarray(ms, dtype=float)
    stats = {f"p{q}_ms": percentile(values, q) for q in (50, 95, 99)}
    return {**stats, "mean_ms": float(values.mean()) if len(values) else None}


def fmt(value: Any, digits: int = 1) -> str:
    """``-`` for None, a float with ``digits`` decimals (thousands separated), else ``str``."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def row(cells: Iterable[Any]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table's lines. ``align`` has one letter per column, ``l`` or ``r``
    (default: the first column left, the others right)."""
    align = align or "l" + "r" * (len(columns) - 1)
    if len(align) != len(columns):
        raise ValueError(f"align {align!r} does not have one letter per column of {columns}")
    lines = [row(columns), "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    return lines + [row(cells) for cells in rows]
