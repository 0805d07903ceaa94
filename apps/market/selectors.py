"""Reads of market data. Candle frames come straight from a cursor into numpy (no model instances)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Count, Max, Min, Sum

from apps.market.models import Candle, DataGap, Market
from apps.market.timeframes import timeframe_ms
from apps.market.validation import PRICE_COLUMNS, empty_candle_frame


def candle_frame(
    *, exchange: str, symbol: str, timeframe: str, start: int | None = None, end: int | None = None
) -> pd.DataFrame:
    """Stored candles as a candle frame, ascending; `start`/`end` are inclusive bounds on close time (ms)."""
    timeframe_ms(timeframe)
    sql = (
        "SELECT timestamp, open, high, low, close, volume FROM market_data "
        "WHERE exchange = %s AND symbol = %s AND timeframe = %s"
    )
    params: list[Any] = [exchange, symbol, timeframe]
    if start is not None:
        sql += " AND timestamp >= %s"
        params.append(int(start))
    if end is not None:
        sql += " AND timestamp <= %s"
        params.append(int(end))
    with connection.cursor() as cur:
        cur.execute(sql + " ORDER BY timestamp", params)
        rows = cur.fetchall()
    if not rows:
        return empty_candle_frame()
    arr = np.array(rows, dtype=np.float64)
    frame = pd.DataFrame({"timestamp": np.array([r[0] for r in rows], dtype=np.int64)})
    for i, name in enumerate(PRICE_COLUMNS, start=1):
        frame[name] = arr[:, i]
    return frame


def last_candle_timestamp(exchange: str, symbol: str, timeframe: str) -> int | None:
    """Close time of the newest stored candle, or None."""
    return Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe).aggregate(
        m=Max("timestamp")
    )["m"]


def gaps_in_range(exchange: str, symbol: str, timeframe: str, start: int, end: int) -> list[DataGap]:
    """Known unfilled gaps (open or exchange_outage) overlapping [start, end] (close times, inclusive)."""
    return list(
        DataGap.objects.filter(
            market__exchange=exchange,
            market__symbol=symbol,
            market__timeframe=timeframe,
            start_timestamp__lte=end,
            end_timestamp__gte=start,
        )
        .exclude(status=DataGap.Status.FILLED)
        .order_by("start_timestamp")
    )


def market_coverage(market: Market) -> dict[str, Any]:
    """Summary of what is stored for a market, from the ledger (no scan of market_data)."""
    ranges = market.covered_ranges.aggregate(
        first=Min("first_timestamp"), last=Max("last_timestamp"), candles=Sum("candles"), ranges=Count("id")
    )
    gaps = {
        row["status"]: row
        for row in market.gaps.values("status").annotate(n=Count("id"), missing=Sum("missing")).order_by()
    }

    def _g(status: str, key: str) -> int:
        return int(gaps.get(status, {}).get(key) or 0)

    return {
        "market": str(market),
        "exchange": market.exchange,
        "symbol": market.symbol,
        "timeframe": market.timeframe,
        "first_timestamp": ranges["first"],
        "last_timestamp": ranges["last"],
        "candles": int(ranges["candles"] or 0),
        "covered_ranges": int(ranges["ranges"] or 0),
        "open_gaps": _g(DataGap.Status.OPEN, "n"),
        "missing_candles": _g(DataGap.Status.OPEN, "missing"),
        "outage_gaps": _g(DataGap.Status.EXCHANGE_OUTAGE, "n"),
        "outage_missing_candles": _g(DataGap.Status.EXCHANGE_OUTAGE, "missing"),
        "filled_gaps": _g(DataGap.Status.FILLED, "n"),
    }
