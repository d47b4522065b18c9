"""Numbers for people: parameter counts and byte sizes with a decimal prefix."""

from __future__ import annotations

import math


def human(value: float, unit: str = "") -> str:
    """Three significant digits and a decimal prefix: counts without a unit (22.7M, 1.2B, 950), sizes with
    one (90.9 MB, 512 B)."""
    if not math.isfinite(value):
        return "–"
    prefixes = (("G", 1e9), ("M", 1e6), ("k", 1e3)) if unit else (("B", 1e9), ("M", 1e6), ("K", 1e3))
    space = " " if unit else ""
    for prefix, size in prefixes:
        if value >= size:
            return f"{value / size:.3g}{space}{prefix}{unit}"
    return f"{value:.0f}{space}{unit}"
