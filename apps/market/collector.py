"""Collection (incremental, live) and backfill (history, resumable, gap-aware) of candles from providers.

Storage always goes through `services.ingest_candles` (validate, upsert, ledger, publish after commit), one page at a
time and each page in its own transaction, so an interrupted run keeps every page it stored and a rerun continues
after it: backfill asks the ledger (CoveredRange / DataGap) what is still missing and fetches only that.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone
from tqdm import tqdm

from apps.market.ledger import refresh_ledger
from apps.market.models import CoveredRange, DataGap, Market
from apps.market.providers.base import Provider
from apps.market.providers.registry import get_provider
from apps.market.selectors import last_candle_timestamp
from apps.market.services import IngestResult, get_or_create_market, ingest_candles
from apps.market.timeframes import format_ms, last_closed, now_ms, timeframe_ms

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


# --- providers for stored markets ----------------------------------------------------------------------------------
def provider_for_market(market: Market, **options: Any) -> Provider:
    """The provider a Market row names (Market.provider), bound to its exchange."""
    return get_provider(market.provider, exchange=market.exchange, **options)


def _clock(provider: Provider) -> int:
    """'Now' as the provider sees it (injectable in tests through the provider's clock)."""
    clock = getattr(provider, "clock", None)
    return int(clock()) if callable(clock) else now_ms()


# --- collection ----------------------------------------------------------------------------------------------------
def _merge(total: IngestResult, part: IngestResult) -> None:
    total.received += part.received
    total.stored += part.stored
    total.rejected.extend(part.rejected)
    total.new_timestamps.extend(part.new_timestamps)
    total.updated += getattr(part, "updated", 0)


BACKOFF_BASE_S = 60
BACKOFF_MAX_S = 3600


def root_cause(exc: BaseException) -> str:
    """One line naming what actually failed (DNS, refused connection, timeout...), not the wrapper's 80-line story."""
    chain, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:  # our database refused the write: say so (a statement timeout is not the exchange timing out)
        if isinstance(e, DatabaseError):
            cause = e.__cause__
            code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            return f"database write failed (SQLSTATE {code}): {first}" if code else f"database error: {first}"
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    host = ""
    for marker in ("host='", "//"):
        if marker in text:
            host = text.split(marker, 1)[1].split("'", 1)[0].split("/", 1)[0].split(":", 1)[0]
            break
    where = f" for {host}" if host else ""
    lowered = text.lower()
    if any(k in lowered for k in ("nameresolutionerror", "name or service not known", "temporary failure in name",
                                  "nodename nor servname", "getaddrinfo failed", "gaierror")):
        return f"DNS resolution failed{where}"
    if "connection refused" in lowered or "connectionrefusederror" in lowered:
        return f"connection refused{where}"
    if "timed out" in lowered or "timeout" in lowered:
        return f"timed out{where}"
    if "ssl" in lowered and "certificate" in lowered:
        return f"TLS certificate error{where}"
    innermost = chain[-1]
    return f"{type(innermost).__name__}: {innermost}".splitlines()[0][:300]


def collect_market(market_id: int, *, provider: Provider | None = None) -> IngestResult:
    """Fetch and store the closed candles newer than the newest stored one; new candles are published after commit.

    Success: Market.last_collected_at, failures reset. Failure: Market.last_error = the root cause in one line,
    Market.failures + 1 and Market.retry_after = now + exponential backoff (rounds skip the market until then); the
    exception is re-raised for the caller to report.
    """
    market = Market.objects.filter(pk=market_id).first()
    if market is None:
        raise Market.DoesNotExist(f"no market with id {market_id}")
    total = IngestResult(received=0, stored=0, rejected=[], new_timestamps=[])
    try:
        provider = provider or provider_for_market(market)
        since = last_candle_timestamp(market.exchange, market.symbol, market.timeframe)
        for page in provider.fetch_candles(market.symbol, market.timeframe, since=since, until=None):
            part = ingest_candles(
                exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe, df=page, publish=True
            )
            _merge(total, part)
    except Exception as exc:
        cause = root_cause(exc)
        failures = market.failures + 1
        delay = min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)
        Market.objects.filter(pk=market.pk).update(
            last_error=cause[:MAX_ERROR_CHARS], failures=failures,
            retry_after=timezone.now() + timedelta(seconds=delay),
        )
        logger.warning("collect %s failed (%d in a row, next try in %ds): %s", market, failures, delay, cause)
        raise
    Market.objects.filter(pk=market.pk).update(last_collected_at=timezone.now(), last_error="", failures=0,
                                               retry_after=None)
    return total


def watched_markets() -> list[Market]:
    """Markets to poll each round: those watched (through services.market_watch, e.g. by a starting bot) whose mode
    is `poll` (stream markets are fed by `manage.py stream`)."""
    return list(Market.objects.filter(watched=True).exclude(mode=Market.Mode.STREAM)
                .order_by("exchange", "symbol", "timeframe"))


def due_markets() -> tuple[list[Market], list[Market]]:
    """(watched poll markets due now, those still backing off after failures)."""
    now = timezone.now()
    due, waiting = [], []
    for market in watched_markets():
        (waiting if market.retry_after is not None and market.retry_after > now else due).append(market)
    return due, waiting


def market_summary(market: Market, result: IngestResult | None, error: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"market_id": market.pk, "market": str(market)}
    if result is not None:
        out.update(
            received=result.received,
            stored=result.stored,
            new=len(result.new_timestamps),
            rejected=len(result.rejected),
            last=result.new_timestamps[-1] if result.new_timestamps else None,
        )
    if error:
        out["error"] = error
    return out


def collect_all() -> dict[str, dict[str, Any]]:
    """One synchronous collection round over the watched markets; a failing market never stops the others.

    Returns {"exchange symbol timeframe": {market_id, received, stored, new, rejected, last | error}}.
    """
    results: dict[str, dict[str, Any]] = {}
    for market in watched_markets():
        try:
            results[str(market)] = market_summary(market, collect_market(market.pk))
        except Exception as exc:  # noqa: BLE001 - recorded on the market (last_error) and reported
            results[str(market)] = market_summary(market, None, f"{type(exc).__name__}: {exc}")
    return results


def summary_line(label: str, item: dict[str, Any]) -> str:
    """One human line per market (the `collect` command's output)."""
    if "error" in item:
        return f"{label}: ERROR {item['error']}"
    last = f", last {format_ms(item['last'])}" if item.get("last") is not None else ""
    return (
        f"{label}: received {item['received']}, new {item['new']}, rejected {item['rejected']}{last}"
    )


# --- enqueueing (only after the surrounding transaction commits) ---------------------------------------------------
def enqueue_collect(market_id: int) -> None:
    from apps.market.tasks import collect_market_task

    transaction.on_commit(lambda: collect_market_task.delay(market_id))


def enqueue_backfill(exchange: str, symbol: str, timeframe: str, since: int, until: int | None = None) -> None:
    from apps.market.tasks import backfill_task

    transaction.on_commit(lambda: backfill_task.delay(exchange, symbol, timeframe, since, until))


# --- backfill ------------------------------------------------------------------------------------------------------
@dataclass
class BackfillReport:
    """What one backfill run did. `fetched` = candles the provider returned; `stored` = of those, new in the DB."""

    exchange: str
    symbol: str
    timeframe: str
    since: int
    until: int
    fetched: int = 0
    stored: int = 0
    rejected: int = 0
    gaps_found: int = 0
    gaps_filled: int = 0
    outages: int = 0
    pages: int = 0
    ranges_fetched: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.exchange} {self.symbol} {self.timeframe} {format_ms(self.since)} .. {format_ms(self.until)}: "
            f"fetched {self.fetched} in {self.pages} pages, stored {self.stored} new, rejected {self.rejected}, "
            f"gaps found {self.gaps_found}, filled {self.gaps_filled}, exchange outages {self.outages}"
        )


def missing_ranges(market: Market, start: int, end: int) -> list[tuple[int, int]]:
    """Close-time ranges [a, b] within [start, end] that the ledger neither covers nor knows as exchange outages."""
    tf = timeframe_ms(market.timeframe)
    blocks = [
        *CoveredRange.objects.filter(market=market, first_timestamp__lte=end, last_timestamp__gte=start).values_list(
            "first_timestamp", "last_timestamp"
        ),
        *DataGap.objects.filter(
            market=market,
            status=DataGap.Status.EXCHANGE_OUTAGE,
            start_timestamp__lte=end,
            end_timestamp__gte=start,
        ).values_list("start_timestamp", "end_timestamp"),
    ]
    out: list[tuple[int, int]] = []
    cursor = start
    for first, last in sorted(blocks):
        if first > cursor:
            out.append((cursor, min(first - tf, end)))
        cursor = max(cursor, last + tf)
        if cursor > end:
            break
    if cursor <= end:
        out.append((cursor, end))
    return out


def _fetch_range(
    provider: Provider, market: Market, start: int, end: int, report: BackfillReport, bar: tqdm | None
) -> int:
    """Fetch and store candles closing in [start, end], page by page; returns how many the provider returned."""
    tf = timeframe_ms(market.timeframe)
    got = 0
    for page in provider.fetch_candles(market.symbol, market.timeframe, since=start - tf, until=end):
        result = ingest_candles(
            exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe, df=page, publish=False
        )
        got += len(page)
        report.pages += 1
        report.fetched += len(page)
        report.stored += len(result.new_timestamps)
        report.rejected += len(result.rejected)
        if bar is not None:
            bar.update(len(page))
    report.ranges_fetched.append((start, end))
    return got


def _refill_gaps(provider: Provider, market: Market, start: int, end: int, report: BackfillReport) -> None:
    """Re-request each open gap once; what the exchange still does not return is an exchange outage (never retried)."""
    tf = timeframe_ms(market.timeframe)
    gaps = list(
        DataGap.objects.filter(
            market=market, status=DataGap.Status.OPEN, start_timestamp__lte=end, end_timestamp__gte=start
        ).order_by("start_timestamp")
    )
    report.gaps_found += len(gaps)
    for gap in gaps:
        g_start, g_end = gap.start_timestamp, gap.end_timestamp
        rejected_before = report.rejected
        got = _fetch_range(provider, market, g_start, g_end, report, None)
        rejected = report.rejected - rejected_before
        now = timezone.now()
        DataGap.objects.filter(pk=gap.pk).update(attempts=gap.attempts + 1, last_attempt_at=now)
        refresh_ledger(market, start=g_start - tf, end=g_end + tf)
        still_open = list(
            DataGap.objects.filter(
                market=market, status=DataGap.Status.OPEN, start_timestamp__lte=g_end, end_timestamp__gte=g_start
            )
        )
        if not still_open:
            report.gaps_filled += 1
            continue
        if rejected:
            # The exchange has these candles but sent them broken: not an outage, the gap stays open for the next
            # backfill (a hole recorded as exchange_outage is never asked for again).
            note = f"exchange sent {rejected} invalid candles for this range on backfill (rejected); kept open"
            for row in still_open:
                DataGap.objects.filter(pk=row.pk).update(note=note[:200], attempts=max(row.attempts, gap.attempts + 1),
                                                         last_attempt_at=now)
            continue
        note = (
            f"exchange returned no candles for {format_ms(g_start)}..{format_ms(g_end)} on backfill"
            if got == 0
            else f"exchange returned {got} of {gap.missing} candles for this range on backfill"
        )
        for row in still_open:
            row.status = DataGap.Status.EXCHANGE_OUTAGE
            row.note = note[:200]
            row.attempts = max(row.attempts, gap.attempts + 1)
            row.last_attempt_at = now
            row.save(update_fields=["status", "note", "attempts", "last_attempt_at"])
            report.outages += 1
            logger.info("%s: %d candles missing from %s recorded as exchange outage", market, row.missing,
                        format_ms(row.start_timestamp))


def backfill(
    exchange: str,
    symbol: str,
    timeframe: str,
    since: int,
    until: int | None = None,
    *,
    provider: Provider | str | None = None,
    progress: bool = True,
) -> BackfillReport:
    """Store the history of candles closing in [since, until] (ms; until defaults to the last closed candle).

    Resumable: ranges the ledger already covers, and known exchange outages, are not fetched again. Afterwards every
    open gap in the range is re-requested once; a gap the exchange still has no data for becomes `exchange_outage`.
    """
    tf = timeframe_ms(timeframe)
    existing = Market.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe).first()
    if provider is None or isinstance(provider, str):
        name = provider or (existing.provider if existing else "ccxt")
        provider_obj: Provider = get_provider(name, exchange=exchange)
    else:
        name, provider_obj = getattr(provider, "name", None), provider
    market = existing or get_or_create_market(exchange, symbol, timeframe, provider=name)
    start = -(-int(since) // tf) * tf  # first grid close time >= since
    newest = last_closed(_clock(provider_obj), timeframe)
    end = newest if until is None else min((int(until) // tf) * tf, newest)
    if start > end:
        raise ValueError(
            f"nothing to backfill for {exchange} {symbol} {timeframe}: since {format_ms(start)} is after until "
            f"{format_ms(end)} (the last closed candle is {format_ms(newest)})"
        )
    report = BackfillReport(exchange=exchange, symbol=symbol, timeframe=timeframe, since=start, until=end)
    todo = missing_ranges(market, start, end)
    total = sum((b - a) // tf + 1 for a, b in todo)
    bar = tqdm(
        total=total, unit="candle", desc=f"{exchange} {symbol} {timeframe}", disable=None if progress else True,
        leave=False,
    )
    try:
        for a, b in todo:
            _fetch_range(provider_obj, market, a, b, report, bar)
            refresh_ledger(market, start=a, end=b)
    finally:
        bar.close()
    _refill_gaps(provider_obj, market, start, end, report)
    logger.info("backfill %s", report.summary())
    return report
