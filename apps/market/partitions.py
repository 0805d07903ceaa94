"""Monthly partitions of raw_trades on PostgreSQL (no-op on other databases, where raw_trades is a plain table).

Partition `raw_trades_yYYYYmMM` holds trades with timestamp in [first ms of the month, first ms of the next month).
Creation is serialised with a transaction-level advisory lock, so concurrent workers never race on the DDL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from django.db import connection, transaction

from apps.market.timeframes import datetime_to_ms, ms_to_datetime, now_ms

_LOCK_KEY = 0x7261775F74726164  # "raw_trad"


def _month_start(year: int, month: int) -> int:
    return datetime_to_ms(datetime(year, month, 1, tzinfo=UTC))


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def partition_name(year: int, month: int) -> str:
    return f"raw_trades_y{year:04d}m{month:02d}"


def months_between(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """(year, month) of every month touched by [start_ms, end_ms]."""
    a, b = ms_to_datetime(int(start_ms)), ms_to_datetime(int(end_ms))
    out, ym = [], (a.year, a.month)
    while ym <= (b.year, b.month):
        out.append(ym)
        ym = _next(*ym)
    return out


def existing_partitions() -> list[str]:
    """Names of the partitions attached to raw_trades (PostgreSQL), sorted."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'raw_trades'::regclass ORDER BY c.relname"
        )
        return [r[0] for r in cur.fetchall()]


def ensure_raw_trade_partitions(start_ms: int, end_ms: int) -> list[str]:
    """Create the missing monthly partitions covering [start_ms, end_ms]; returns the names created (idempotent)."""
    if connection.vendor != "postgresql":
        return []
    if end_ms < start_ms:
        raise ValueError(f"ensure_raw_trade_partitions: end {end_ms} < start {start_ms}")
    wanted = {partition_name(y, m): (y, m) for y, m in months_between(start_ms, end_ms)}
    missing = [name for name in wanted if name not in set(existing_partitions())]
    if not missing:
        return []
    created: list[str] = []
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        have = set(existing_partitions())
        for name in missing:
            if name in have:
                continue
            y, m = wanted[name]
            lo, hi = _month_start(y, m), _month_start(*_next(y, m))
            cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF raw_trades FOR VALUES FROM ({lo}) TO ({hi})")
            created.append(name)
    return created


def months_in(timestamps) -> list[tuple[int, int]]:
    """(year, month) of the months that occur in `timestamps` (ms), ascending."""
    months = np.unique(np.asarray(timestamps, dtype="datetime64[ms]").astype("datetime64[M]")).astype(np.int64)
    return [(1970 + int(m) // 12, int(m) % 12 + 1) for m in months]  # months since 1970-01


def ensure_month_partitions(months) -> list[str]:
    """Create the partitions of these (year, month)s (not every month in between); returns the names created."""
    if connection.vendor != "postgresql":
        return []
    created: list[str] = []
    for year, month in sorted(set(months)):
        first = _month_start(year, month)
        created += ensure_raw_trade_partitions(first, first)
    return created


def create_partitions_ahead(months: int) -> list[str]:
    """Ensure partitions from the current month through `months` months ahead (the beat task calls this)."""
    if months < 0:
        raise ValueError(f"create_partitions_ahead: months must be >= 0, got {months}")
    now = ms_to_datetime(now_ms())
    ym = (now.year, now.month)
    for _ in range(months):
        ym = _next(*ym)
    return ensure_raw_trade_partitions(_month_start(now.year, now.month), _month_start(*ym))
