"""Data-quality ledger: CoveredRange (contiguous runs of stored candles) and DataGap (holes between them).

Refreshing works on the touched window only, widened to the neighbouring stored candles and the covered runs they
belong to, so a batch arriving after a pause still records the hole before it. Runs are found with one numpy diff over
the stored close times of that window (one query), never with per-candle ORM queries. Gap statuses survive a refresh:
an `exchange_outage` hole stays one (also when part of it is backfilled); a hole that is now fully stored is `filled`.
"""

from __future__ import annotations

import csv
import io

import numpy as np
from django.db import connection, transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from apps.market import selectors
from apps.market.models import Candle, CoveredRange, DataGap, Market
from apps.market.timeframes import timeframe_ms

Empty = tuple[int, int, str]  # (start, end, note): see refresh_ledger


def stored_timestamps(market: Market, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    """Ascending close times stored for the market, optionally within [lo, hi]."""
    return selectors.stored_timestamps(market.exchange, market.symbol, market.timeframe, lo, hi)


def runs(ts: np.ndarray, tf: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) close times of each contiguous run in sorted timestamps."""
    if ts.size == 0:
        return ts, ts
    breaks = np.flatnonzero(np.diff(ts) != tf)
    firsts = ts[np.concatenate(([0], breaks + 1))]
    lasts = ts[np.concatenate((breaks, [ts.size - 1]))]
    return firsts, lasts


def _window(market: Market, start: int | None, end: int | None, tf: int) -> tuple[int | None, int | None]:
    """Widen [start, end] to whole covered runs including the stored neighbours; (None, None) = rebuild everything."""
    if start is None or end is None:
        return None, None
    candles = Candle.objects.filter(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe)
    prev_ts = candles.filter(timestamp__lt=start).aggregate(m=Max("timestamp"))["m"]
    next_ts = candles.filter(timestamp__gt=end).aggregate(m=Min("timestamp"))["m"]
    lo, hi = (prev_ts if prev_ts is not None else start), (next_ts if next_ts is not None else end)
    ranges = CoveredRange.objects.filter(market=market)
    for edge, is_lo in ((prev_ts, True), (next_ts, False)):
        if edge is None:
            continue
        run = ranges.filter(first_timestamp__lte=edge, last_timestamp__gte=edge).first()
        if run is None:  # ledger does not know a stored candle: it is stale, rebuild it whole
            return None, None
        if is_lo:
            lo = run.first_timestamp
        else:
            hi = run.last_timestamp
    return lo, hi


def _append_tail(market: Market, start: int, end: int, tf: int, empty: Empty | None) -> bool:
    """The live case in a few indexed queries: everything stored after the newest covered run lies in [start, end]
    and no gap row lies past that run, so nothing before it can change: the newest run is extended when the first
    new candle follows it, and the runs and holes after it are inserted (one COPY or multi-row INSERT each, no model
    instances: a stream stores a thousand quiet minutes at a time after a flood). The general path scans the stored
    close times of the whole window, which grows with the history (a year of 1m candles: 525k timestamps a
    minute)."""
    newest = CoveredRange.objects.filter(market=market).order_by("-last_timestamp").first()
    if newest is None or newest.last_timestamp >= start:
        return False
    if DataGap.objects.filter(market=market, end_timestamp__gt=newest.last_timestamp).exists():
        return False
    ts = stored_timestamps(market, newest.last_timestamp + 1)
    if ts.size == 0 or ts[0] < start or ts[-1] > end:  # a stored candle the ledger does not know: rebuild
        return False
    firsts, lasts = runs(ts, tf)
    hole_starts = np.concatenate(([newest.last_timestamp], lasts[:-1])) + tf  # hole i: just before run i
    hole_ends = firsts - tf
    now = timezone.now()
    if firsts[0] == newest.last_timestamp + tf:  # the first new run continues the newest one
        CoveredRange.objects.filter(pk=newest.pk).update(
            last_timestamp=int(lasts[0]), candles=F("candles") + int((lasts[0] - firsts[0]) // tf + 1), updated_at=now)
        firsts, lasts, hole_starts, hole_ends = firsts[1:], lasts[1:], hole_starts[1:], hole_ends[1:]
    stamp = connection.ops.adapt_datetimefield_value(now)
    _insert_rows(CoveredRange, ("market_id", "first_timestamp", "last_timestamp", "candles", "updated_at"),
                 [(market.pk, f, la, (la - f) // tf + 1, stamp) for f, la in zip(firsts.tolist(), lasts.tolist(),
                                                                                  strict=True)])
    lo, hi, note = empty if empty is not None else (0, -1, "")
    holes = []
    for gs, ge in zip(hole_starts.tolist(), hole_ends.tolist(), strict=True):
        seen_empty = lo <= gs and ge <= hi  # mark_empty's rule, applied as the row is stored
        holes.append((market.pk, gs, ge, (ge - gs) // tf + 1,
                      (DataGap.Status.EMPTY if seen_empty else DataGap.Status.OPEN).value, 0, stamp,
                      note[:200] if seen_empty else ""))
    _insert_rows(DataGap, ("market_id", "start_timestamp", "end_timestamp", "missing", "status", "attempts",
                           "detected_at", "note"), holes)
    return True


def _insert_rows(model, columns: tuple[str, ...], rows: list[tuple], chunk: int = 500) -> None:
    """Plain values, no model instances: one COPY on PostgreSQL (a flood's settle stores thousands of runs and holes:
    a third of the time of multi-row INSERTs), elsewhere multi-row INSERTs in chunks within every backend's parameter
    limit."""
    if not rows:
        return
    table = model._meta.db_table
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            buf = io.StringIO()
            csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)  # strings quoted: '' stays '', not NULL
            buf.seek(0)
            cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)
            return
        row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES " + ", ".join([row_sql] * len(part)),
                        [v for row in part for v in row])


def mark_empty(market: Market, start: int, end: int, note: str) -> int:
    """Open gaps lying wholly inside [start, end] (close times) become `empty` (services.mark_source_empty)."""
    return DataGap.objects.filter(
        market=market, status=DataGap.Status.OPEN, start_timestamp__gte=start, end_timestamp__lte=end
    ).update(status=DataGap.Status.EMPTY, note=note[:200])


@transaction.atomic
def refresh_ledger(market: Market, *, start: int | None = None, end: int | None = None,
                   empty: Empty | None = None) -> None:
    """Rebuild the ledger of the market around [start, end] (close times; None = whole history). `empty`
    (start, end, note): the source was watched over that range and had nothing where no candle is, so the open gaps
    wholly inside it are recorded `empty` (mark_empty; the live tail path stores its new holes so at once).

    The Market row is locked for the transaction so concurrent ingests of one market do not race on the ledger.
    """
    Market.objects.select_for_update().filter(pk=market.pk).first()
    tf = timeframe_ms(market.timeframe)
    if start is not None and end is not None and _append_tail(market, start, end, tf, empty):
        return
    lo, hi = _window(market, start, end, tf)
    ts = stored_timestamps(market, lo, hi)
    firsts, lasts = runs(ts, tf)

    covered = CoveredRange.objects.filter(market=market)
    gaps_qs = DataGap.objects.filter(market=market)
    if lo is not None:
        covered = covered.filter(first_timestamp__lte=hi, last_timestamp__gte=lo)
        gaps_qs = gaps_qs.filter(start_timestamp__gte=lo, start_timestamp__lte=hi)
    covered.delete()
    CoveredRange.objects.bulk_create(
        [
            CoveredRange(market=market, first_timestamp=f, last_timestamp=la, candles=(la - f) // tf + 1)
            for f, la in zip(firsts.tolist(), lasts.tolist(), strict=True)
        ]
    )

    holes = list(zip((lasts[:-1] + tf).tolist(), (firsts[1:] - tf).tolist(), strict=True))
    _reconcile_gaps(market, list(gaps_qs), holes, tf)
    if empty is not None:
        mark_empty(market, *empty)


def _reconcile_gaps(market: Market, existing: list[DataGap], holes: list[tuple[int, int]], tf: int) -> None:
    by_start = {g.start_timestamp: g for g in existing}
    ordered = sorted(existing, key=lambda g: g.start_timestamp)
    starts = np.array([g.start_timestamp for g in ordered], dtype=np.int64)
    to_create: list[DataGap] = []
    to_update: list[DataGap] = []
    matched: set[int] = set()
    overlapped: set[int] = set()
    for gs, ge in holes:
        missing = (ge - gs) // tf + 1
        # existing rows overlapping this hole (rows are disjoint and sorted by start)
        i = int(np.searchsorted(starts, ge, side="right"))
        overlapping = []
        while i > 0 and ordered[i - 1].end_timestamp >= gs:
            overlapping.append(ordered[i - 1])
            i -= 1
        overlapped.update(g.pk for g in overlapping)
        inherited = (
            DataGap.Status.EXCHANGE_OUTAGE
            if any(g.status == DataGap.Status.EXCHANGE_OUTAGE for g in overlapping)
            else DataGap.Status.OPEN
        )
        attempts = max((g.attempts for g in overlapping), default=0)
        row = by_start.get(gs)
        if row is not None:
            matched.add(row.pk)
            new_status = inherited if row.status == DataGap.Status.FILLED else row.status
            if (row.end_timestamp, row.missing, row.status) != (ge, missing, new_status):
                row.end_timestamp, row.missing, row.status = ge, missing, new_status
                to_update.append(row)
        else:
            row = DataGap(market=market, start_timestamp=gs, end_timestamp=ge, missing=missing, status=inherited,
                          attempts=attempts)
            to_create.append(row)
    superseded = [g.pk for g in existing if g.pk not in matched and g.pk in overlapped]
    now_filled = [g for g in existing if g.pk not in matched and g.pk not in overlapped
                  and g.status != DataGap.Status.FILLED]
    if superseded:
        DataGap.objects.filter(pk__in=superseded).delete()
    for g in now_filled:
        g.status = DataGap.Status.FILLED
        to_update.append(g)
    if to_update:
        DataGap.objects.bulk_update(to_update, ["end_timestamp", "missing", "status"])
    if to_create:
        DataGap.objects.bulk_create(to_create)
