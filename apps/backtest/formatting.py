"""Metric values for people (the command's table and the HTML report share it)."""

from __future__ import annotations

from typing import Any

from apps.market.timeframes import format_ms


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


def format_metric(key: str, value: Any) -> str:
    """Times as UTC dates, *_ms durations as d/h/m, percentages with a sign, everything else as a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        if key in ("start", "end") or key.endswith(("_start", "_trough", "_end")):
            return format_ms(value) + " UTC"
        if key.endswith("_ms"):
            days, rest = divmod(value // 1000, 86_400)
            hours, rest = divmod(rest, 3600)
            return f"{days}d {hours:02d}h {rest // 60:02d}m"
    if isinstance(value, float) and key.endswith("_ms"):
        return format_metric(key, int(value))
    if isinstance(value, float) and key.endswith("_pct"):
        return f"{value:,.2f} %"
    return format_value(value)


def metric_label(key: str) -> str:
    """`max_drawdown_pct` -> `max drawdown %` for tables meant for people."""
    label = key.replace("_pct", " %").replace("_ms", "").replace("_", " ")
    return label.replace("buy hold", "buy & hold").replace("avg ", "average ")
