"""Reads of market data. Candle frames come straight from a cursor into numpy (no model instances)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pandas as pd
from django.db import connection
from django.db.models import Count, Max, Min, Sum

from apps.market.models import Candle, DataGap, Market
from apps.market.timeframes import timeframe_ms
from apps.market.validation import CANDLE_COLUMNS, PRICE_COLUMNS, empty_candle_frame

_COPY_HEADER_LEN = 19  # signature (11) + flags (4) + header extension length (4, always 0 here)
_CANDLE_OUT = np.dtype(
    [("n", ">i2"), ("l_ts", ">i4"), ("timestamp", ">i8")]
    + [item for name in PRICE_COLUMNS for item in ((f"l_{name}", ">i4"), (name, ">f8"))]
)
_TS_OUT = np.dtype([("n", ">i2"), ("l_ts", ">i4"), ("timestamp", ">i8")])


def fetch_fixed(sql: str, params: list[Any], dtype: np.dtype) -> np.ndarray | list[tuple]:
    """Rows of a query whose columns are all NOT NULL bigint/float8: on PostgreSQL one binary COPY TO parsed by numpy
    (about 10x faster than fetchall for a million rows), elsewhere the plain tuples."""
    with connection.cursor() as cur:
        if connection.vendor != "postgresql":
            cur.execute(sql, params)
            return cur.fetchall()
        query = cur.mogrify(sql, params).decode()
        buf = io.BytesIO()
        cur.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", buf)
    body = buf.getbuffer()[_COPY_HEADER_LEN:-2]  # minus header and the -1 trailer
    return np.frombuffer(body, dtype=dtype)


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
    rows = fetch_fixed(sql + " ORDER BY timestamp", params, _CANDLE_OUT)
    if len(rows) == 0:
        return empty_candle_frame()
    if isinstance(rows, np.ndarray):
        return pd.DataFrame({c: rows[c].astype(np.int64 if c == "timestamp" else np.float64) for c in
                             ("timestamp", *PRICE_COLUMNS)})
    frame = pd.DataFrame({"timestamp": np.array([r[0] for r in rows], dtype=np.int64)})
    arr = np.array(rows, dtype=np.float64)
    for i, name in enumerate(PRICE_COLUMNS, start=1):
        frame[name] = arr[:, i]
    return frame


def stored_timestamps(exchange: str, symbol: str, timeframe: str, lo: int | None = None,
                      hi: int | None = None) -> np.ndarray:
    """Ascending stored close times of a market, optionally within [lo, hi] (inclusive)."""
    sql = "SELECT timestamp FROM market_data WHERE exchange = %s AND symbol = %s AND timeframe = %s"
    params: list[Any] = [exchange, symbol, timeframe]
    if lo is not None:
        sql += " AND timestamp >= %s"
        params.append(int(lo))
    if hi is not None:
        sql += " AND timestamp <= %s"
        params.append(int(hi))
    rows = fetch_fixed(sql + " ORDER BY timestamp", params, _TS_OUT)
    if isinstance(rows, np.ndarray):
        return rows["timestamp"].astype(np.int64)
    return np.array(rows, dtype=np.int64).reshape(-1)


def last_candle_timestamp(exchange: str, symbol: str, timeframe: str) -> int | None:
    """Close time of the newest stored candle, or None."""
    return Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe).aggregate(
        m=Max("timestamp")
    )["m"]


def candle_count(*, exchange: str, symbol: str, timeframe: str, start: int | None = None,
                 end: int | None = None) -> int:
    """Stored candles of a market in [start, end] (close times, inclusive), counted on the index (a request bound)."""
    qs = Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe)
    if start is not None:
        qs = qs.filter(timestamp__gte=start)
    if end is not None:
        qs = qs.filter(timestamp__lte=end)
    return qs.count()


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


def _window_clause(column: str, windows: list[tuple[int, int]], lo_op: str, hi_op: str) -> tuple[str, list[int]]:
    parts, params = [], []
    for lo, hi in windows:
        parts.append(f"({column} {lo_op} %s AND {column} {hi_op} %s)")
        params += [int(lo), int(hi)]
    return "(" + " OR ".join(parts) + ")", params


def candles_in_windows(*, exchange: str, symbol: str, timeframe: str,
                       windows: list[tuple[int, int]]) -> pd.DataFrame:
    """Stored candles with close times in any of the windows (lo, hi] (intrabar detail: the 1m candles inside the
    coarse candles that need them, and only those), ascending."""
    frames = []
    for i in range(0, len(windows), 500):
        where, params = _window_clause("timestamp", windows[i:i + 500], ">", "<=")
        sql = ("SELECT timestamp, open, high, low, close, volume FROM market_data "
               "WHERE exchange = %s AND symbol = %s AND timeframe = %s AND " + where + " ORDER BY timestamp")
        rows = fetch_fixed(sql, [exchange, symbol, timeframe, *params], _CANDLE_OUT)
        if len(rows) == 0:
            continue
        if isinstance(rows, np.ndarray):
            frames.append(pd.DataFrame({c: rows[c].astype(np.int64 if c == "timestamp" else np.float64)
                                        for c in ("timestamp", *PRICE_COLUMNS)}))
        else:
            frames.append(pd.DataFrame(rows, columns=["timestamp", *PRICE_COLUMNS]))
    if not frames:
        return empty_candle_frame()
    return pd.concat(frames, ignore_index=True).sort_values("timestamp", kind="stable").reset_index(drop=True)


def trades_in_windows(*, exchange: str, symbol: str, windows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, prices) of stored raw trades with timestamps in any of the windows [lo, hi), in exchange order
    (timestamp, then trade id as stored: the order they happened)."""
    ts_parts, px_parts = [], []
    with connection.cursor() as cur:
        for i in range(0, len(windows), 500):
            where, params = _window_clause("timestamp", windows[i:i + 500], ">=", "<")
            cur.execute("SELECT timestamp, price FROM raw_trades WHERE exchange = %s AND symbol = %s AND " + where
                        + " ORDER BY timestamp, id", [exchange, symbol, *params])
            rows = cur.fetchall()
            if rows:
                arr = np.array(rows, dtype=np.float64)
                ts_parts.append(arr[:, 0].astype(np.int64))
                px_parts.append(arr[:, 1])
    if not ts_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    ts = np.concatenate(ts_parts)
    px = np.concatenate(px_parts)
    order = np.argsort(ts, kind="stable")
    return ts[order], px[order]


def candle_page_json(*, exchange: str, symbol: str, timeframe: str, limit: int, start: int | None = None,
                     end: int | None = None, after: int | None = None) -> tuple[bytes, int | None]:
    """One page of candles (close time ascending) as a JSON array of [close ms, open, high, low, close, volume] rows,
    and the `after` cursor of the next page (None on the last one).

    On PostgreSQL the database writes the JSON text (float8's shortest exact form, the numbers orjson would write) and
    Python passes it through: building 6,000 Python floats per 1,000-row page and formatting them again was most of the
    list's CPU under load (bench/api.py). Elsewhere, plain rows and orjson."""
    if connection.vendor != "postgresql":
        qs = Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe)
        for bound, lookup in ((start, "gte"), (end, "lte"), (after, "gt")):
            if bound is not None:
                qs = qs.filter(**{f"timestamp__{lookup}": bound})
        rows = list(qs.order_by("timestamp").values_list(*CANDLE_COLUMNS)[: limit + 1])
        return orjson.dumps(rows[:limit]), rows[limit - 1][0] if len(rows) > limit else None
    where = ["exchange = %s", "symbol = %s", "timeframe = %s"]
    params: list[Any] = [exchange, symbol, timeframe]
    for bound, op in ((start, ">="), (end, "<="), (after, ">")):
        if bound is not None:
            where.append(f'"timestamp" {op} %s')
            params.append(bound)
    columns = [f'"{c}"' for c in CANDLE_COLUMNS]
    row = " || ',' || ".join(columns)
    # The aggregate takes the subquery's rows in its order (PostgreSQL's documented idiom; an ORDER BY inside it would
    # sort them again). One row more than the page says whether there is a next one.
    sql = (f"SELECT count(*), string_agg('[' || {row} || ']', ',') FROM (SELECT {', '.join(columns)} "
           f"FROM {Candle._meta.db_table} WHERE {' AND '.join(where)} ORDER BY \"timestamp\" LIMIT %s) page")
    with connection.cursor() as cur:
        cur.execute(sql, [*params, limit + 1])
        count, rows = cur.fetchone()
    if count <= limit:
        return f"[{rows or ''}]".encode(), None
    rows = rows[: rows.rindex(",[")]  # drop the extra row (rows hold only numbers: "[" starts a row)
    last_row = rows[rows.rindex("[") + 1:]
    return f"[{rows}]".encode(), int(last_row[: last_row.index(",")])
