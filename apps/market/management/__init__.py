"""Helpers shared by the market commands (Django-side: they raise CommandError)."""

from __future__ import annotations

from django.core.management.base import CommandError

from apps.market.timeframes import TimeframeError, timeframe_ms


def checked_timeframe(timeframe: str, *, context: str = "") -> str:
    """The --timeframe option, checked: a bad one is a usage error naming the option (one stderr line, exit 2);
    `context` prefixes it (e.g. "import_candles PATH: ")."""
    try:
        timeframe_ms(timeframe)
    except TimeframeError as exc:
        raise CommandError(f"{context}--timeframe: {exc}", returncode=2)
    return timeframe
