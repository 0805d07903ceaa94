"""Numbers and times for people: the ONE place the commands, the HTML reports and the dashboard format them.

* money (balances, equity, pnl, fees): 2 decimals, thousands separators: `-320.14`, `10,000.00`
* percentages: 2 decimals and a % sign: `-3.20%`
* ratios (sharpe, sortino, calmar, profit factor, sqn) and other floats: 2 decimals: `1.23`
* prices: 2 decimals from 1 up, 6 significant digits below (`0.000712345` for XRP/ETH): a price is never rounded away
* amounts (base quantity): up to 8 decimals, trailing zeros dropped: `0.35714286`
* counts: integers with thousands separators: `66,087`
* times: ISO 8601 date and time in UTC: `2023-03-24 12:00 UTC`; durations: `3d 04h 05m`
* a missing value (None, NaN, inf): `-`
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

MISSING = "-"

#: Metrics in the quote currency (money); every *_pct metric is a percentage; these are counts; the rest ratios.
MONEY_METRICS = frozenset({"initial_balance", "final_equity", "gross_profit", "gross_loss", "expectancy", "fees_paid",
                           "pnl", "fees", "equity", "cash"})
COUNT_METRICS = frozenset({"bars", "closed_trades", "max_drawdown_duration_bars", "longest_drawdown_bars",
                           "max_holding_bars", "max_consecutive_wins", "max_consecutive_losses"})
TIME_METRICS = frozenset({"start", "end", "max_drawdown_start", "max_drawdown_trough", "max_drawdown_end",
                          "entry_time", "exit_time", "timestamp", "train_start", "train_end", "test_start",
                          "test_end"})


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def format_money(value: Any) -> str:
    v = _number(value)
    return MISSING if v is None else f"{v:,.2f}"


def format_pct(value: Any) -> str:
    """`value` is already in percent (metrics' *_pct): -3.20458 -> '-3.20%'."""
    v = _number(value)
    return MISSING if v is None else f"{v:,.2f}%"


def format_ratio(value: Any) -> str:
    v = _number(value)
    return MISSING if v is None else f"{v:,.2f}"


def format_count(value: Any) -> str:
    v = _number(value)
    return MISSING if v is None else f"{round(v):,}"


def format_price(value: Any) -> str:
    v = _number(value)
    if v is None:
        return MISSING
    if v == 0 or abs(v) >= 1:
        return f"{v:,.2f}"
    return f"{v:.6g}"


def format_amount(value: Any) -> str:
    v = _number(value)
    if v is None:
        return MISSING
    text = f"{v:,.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def format_time(ms: Any) -> str:
    """ms UTC -> '2023-03-24 12:00 UTC' (seconds shown only when not zero)."""
    v = _number(ms)
    if v is None:
        return MISSING
    try:
        dt = datetime.fromtimestamp(int(v) / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return MISSING
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC" if dt.second else "%Y-%m-%d %H:%M UTC")


def format_duration(ms: Any) -> str:
    v = _number(ms)
    if v is None:
        return MISSING
    days, rest = divmod(int(v) // 1000, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours:02d}h {rest // 60:02d}m"


def format_value(value: Any) -> str:
    """A value whose kind is unknown: integers with separators, floats with 2 decimals, text as is."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return format_ratio(value)
    return str(value)


def format_metric(key: str, value: Any) -> str:
    """A metric (or trade field) by its name: times, durations (*_ms), percentages (*_pct), money, counts, ratios."""
    key = key.lstrip("-")
    if value is None or isinstance(value, bool | str):
        return format_value(value)
    if key in TIME_METRICS:
        return format_time(value)
    if key.endswith("_ms"):
        return format_duration(value)
    if key.endswith("_pct"):
        return format_pct(value)
    if key in MONEY_METRICS:
        return format_money(value)
    if key in COUNT_METRICS:
        return format_count(value)
    if key.endswith("_price"):
        return format_price(value)
    if key == "amount":
        return format_amount(value)
    return format_value(value)


def metric_label(key: str) -> str:
    """`max_drawdown_pct` -> `max drawdown %` for tables meant for people."""
    label = key.lstrip("-").replace("_pct", " %").replace("_ms", "").replace("_", " ")
    return label.replace("buy hold", "buy & hold").replace("avg ", "average ")
