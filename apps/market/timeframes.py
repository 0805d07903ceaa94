"""Timeframes and the candle time convention (pure: no Django).

Candles are RIGHT-ALIGNED: a candle's timestamp is its CLOSE time t (ms UTC) and it covers [t - tf, t).
Exchanges and ccxt label by OPEN time: close = open + tf.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from apps.common.errors import ApplicationError

MINUTE_MS = 60_000
TIMEFRAME_MS: dict[str, int] = {
    "1m": MINUTE_MS,
    "5m": 5 * MINUTE_MS,
    "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS,
    "1h": 60 * MINUTE_MS,
    "4h": 240 * MINUTE_MS,
    "1d": 1440 * MINUTE_MS,
}
TIMEFRAMES: tuple[str, ...] = tuple(TIMEFRAME_MS)
TIMEFRAME_CHOICES = [(tf, tf) for tf in TIMEFRAMES]
YEAR_MS = 365 * 24 * 60 * MINUTE_MS

TimeLabel = Literal["open", "close"]


class TimeframeError(ApplicationError):
    """An unknown timeframe, or a timestamp off the timeframe's grid (field `timeframe` unless told otherwise)."""

    def __init__(self, message: str, *, field: str | None = "timeframe", extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, field=field, extra=extra)


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        raise TimeframeError(
            f"unknown timeframe {timeframe!r}: expected one of {', '.join(TIMEFRAMES)}"
        ) from None


def periods_per_year(timeframe: str) -> float:
    """Bars in a 365-day year, for annualising Sharpe/Sortino/volatility."""
    return YEAR_MS / timeframe_ms(timeframe)


def open_to_close(timestamps, timeframe: str):
    """Exchange label (open time) -> our label (close time). Works on ints and numpy arrays."""
    return timestamps + timeframe_ms(timeframe)


def close_to_open(timestamps, timeframe: str):
    return timestamps - timeframe_ms(timeframe)


def to_close_label(timestamps, timeframe: str, label: TimeLabel):
    if label == "close":
        return timestamps
    if label == "open":
        return open_to_close(timestamps, timeframe)
    raise ValueError(f"time label must be 'open' or 'close', got {label!r}")


def from_close_label(timestamps, timeframe: str, label: TimeLabel):
    if label == "close":
        return timestamps
    if label == "open":
        return close_to_open(timestamps, timeframe)
    raise ValueError(f"time label must be 'open' or 'close', got {label!r}")


def last_closed(now_ms: int, timeframe: str) -> int:
    """Close time of the newest candle that is closed at now_ms (a candle closing exactly at now is closed)."""
    tf = timeframe_ms(timeframe)
    return (now_ms // tf) * tf


def now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_time(value: str) -> int:
    """ms since epoch from an int string, or an ISO date/datetime (UTC when no zone is given)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use ms since epoch or an ISO date like 2023-04-01)") from None
    return datetime_to_ms(dt)


def format_ms(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%d %H:%M:%S")
