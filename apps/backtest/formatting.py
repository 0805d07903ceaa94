"""Metric values for people (the command's table and the HTML report share it)."""

from __future__ import annotations

from typing import Any


def format_value(value: Any) -> str:
    """Thousands separators, 6 significant digits, '-' for a missing value."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    return str(value)
