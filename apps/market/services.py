"""Writes of market data: validated, idempotent, one transaction per batch, announcements only after commit.

`ingest_candles` is THE entry point for candles (collector, CSV import, replay, resampling): validate -> bulk upsert ->
ledger refresh, all in one transaction (a crash mid-way leaves nothing half-written), then on commit publish each NEW
candle on `market:{symbol}` and send `candles_closed` for dependent work (bot ticks).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.db import transaction

from apps.common.errors import ApplicationError
from apps.common.state import refuse_state_fields
from apps.market.ledger import mark_empty, refresh_ledger
from apps.market.models import DataGap, Market, StreamRepair
from apps.market.partitions import ensure_month_partitions, months_in, partition_name
from apps.market.selectors import candle_frame, last_candle_timestamp
from apps.market.timeframes import timeframe_ms
from apps.market.upsert import CandleFrame, TradeFrame, insert_trades_many, upsert_candles_many
from apps.market.validation import CANDLE_COLUMNS, Rejection, validate_candles, validate_trades
from tradebot.notify import market_channel, publish_many

logger = logging.getLogger(__name__)

MAX_LOGGED_REJECTIONS = 5
TRADE_SIDES = {"buy": "buy", "sell": "sell", "b": "buy", "s": "sell"}


@dataclass
class IngestResult:
    """received = rows given; stored = valid rows now in the database (new, changed or already identical);
    new_timestamps = close times that did not exist before, ascending; updated = existing rows whose values changed."""

    received: int
    stored: int
    rejected: list[Rejection]
    new_timestamps: list[int]
    updated: int = 0
    updated_timestamps: list[int] = field(default_factory=list)  # close times of stored candles whose values changed

    def summary(self) -> str:
        return (
            f"received {self.received}, stored {self.stored} ({len(self.new_timestamps)} new, {self.updated} updated, "
            f"{self.stored - len(self.new_timestamps) - self.updated} unchanged), rejected {len(self.rejected)}"
        )


def get_or_create_market(
    exchange: str, symbol: str, timeframe: str, *, watched: bool | None = None, provider: str | None = None
) -> Market:
    """The Market row (created on first sight, with the provider registered for its exchange unless one is given);
    `watched` / `provider` are applied when given."""
    timeframe_ms(timeframe)
    defaults = {k: v for k, v in (("watched", watched), ("provider", provider)) if v is not None}
    market, created = Market.objects.get_or_create(
        exchange=exchange, symbol=symbol, timeframe=timeframe,
        defaults={"provider": default_provider(exchange), **defaults},
    )
    if not created:
        changed = [k for k, v in defaults.items() if getattr(market, k) != v]
        if changed:
            for k in changed:
                setattr(market, k, defaults[k])
            market.save(update_fields=changed)
    return market


# --- markets: every write of a Market row's settings goes through these ------------------------------------------

SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9]+/[A-Za-z0-9]+$")


def default_provider(exchange: str) -> str:
    """The provider a new market of `exchange` uses when none is given (providers.registry.provider_for_exchange:
    `replay` for the replay exchange, else ccxt)."""
    from apps.market.providers.registry import provider_for_exchange

    return provider_for_exchange(exchange)


def validate_market(*, exchange: str, symbol: str, timeframe: str, provider: str) -> None:
    """THE market validator: timeframe known, symbol BASE/QUOTE, and the provider (by registry name) can be built for
    the exchange, i.e. it can serve the market. Raises ApplicationError naming the field."""
    from apps.market.providers.registry import get_provider

    if not isinstance(exchange, str) or not 1 <= len(exchange) <= 32:
        raise ApplicationError(f"exchange must be a name of 1..32 characters, got {exchange!r}", field="exchange")
    if not isinstance(symbol, str) or len(symbol) > 32 or not SYMBOL_PATTERN.match(symbol):
        raise ApplicationError(f"symbol must look like BASE/QUOTE (e.g. BTC/USDT), got {symbol!r}", field="symbol")
    timeframe_ms(timeframe)
    if not isinstance(provider, str) or not provider:
        raise ApplicationError(f"provider must be a provider name, got {provider!r}", field="provider")
    try:
        get_provider(provider, exchange=exchange)
    except ApplicationError as exc:
        if exc.field is None:
            raise ApplicationError(f"provider {provider!r} cannot serve {exchange} {symbol}: {exc.message}",
                                   field="exchange" if provider == "ccxt" else "provider") from None
        raise


# A market's collection state: written by the collector, never by a user (refused by apps.common.state's guard).
MARKET_STATE_FIELDS: tuple[str, ...] = ("last_collected_at", "last_error", "created_at")
MARKET_STATE_HOW = "collection state is written by the collector, not edits"


def refuse_market_state(data: object, *, current: object = None) -> None:
    refuse_state_fields(data, MARKET_STATE_FIELDS, current=current, how=MARKET_STATE_HOW)


@transaction.atomic
def market_create(*, exchange: str, symbol: str, timeframe: str, provider: str | None = None,
                  watched: bool = False) -> Market:
    """A new Market row, validated; an existing (exchange, symbol, timeframe) is an error naming `symbol`."""
    provider = provider or default_provider(exchange)
    validate_market(exchange=exchange, symbol=symbol, timeframe=timeframe, provider=provider)
    if Market.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe).exists():
        raise ApplicationError(f"market {exchange} {symbol} {timeframe} already exists", field="symbol")
    return Market.objects.create(exchange=exchange, symbol=symbol, timeframe=timeframe, provider=provider,
                                 watched=bool(watched))


@transaction.atomic
def market_update(*, market: Market, provider: str | None = None, watched: bool | None = None) -> Market:
    """Change a market's provider and/or watched flag (validated: the provider must serve the market)."""
    market = Market.objects.select_for_update().get(pk=market.pk)
    changed = []
    if provider is not None and provider != market.provider:
        validate_market(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe, provider=provider)
        market.provider = provider
        changed.append("provider")
    if watched is not None and bool(watched) != market.watched:
        if watched:
            validate_market(exchange=market.exchange, symbol=market.symbol, timeframe=market.timeframe,
                            provider=market.provider)
        market.watched = bool(watched)
        changed.append("watched")
    if changed:
        market.save(update_fields=changed)
    return market


@transaction.atomic
def market_watch(*, exchange: str, symbol: str, timeframe: str, provider: str | None = None) -> Market:
    """Collect this market on every collection round (created if new). Validated: its provider must serve it.

    Consumers (a starting bot, a user) call this; market code never asks who needs a market."""
    key = {"exchange": exchange, "symbol": symbol, "timeframe": timeframe}
    market = Market.objects.filter(**key).first()
    if market is None:
        chosen = provider or default_provider(exchange)
        validate_market(**key, provider=chosen)
        # get_or_create: two bots of a new market starting at once both end on the one row
        market, created = Market.objects.get_or_create(**key, defaults={"provider": chosen, "watched": True})
        if created:
            return market
    return market_update(market=market, provider=provider, watched=True)


@transaction.atomic
def market_unwatch(*, market: Market) -> Market:
    """Stop collecting this market on collection rounds (its candles and ledger stay)."""
    return market_update(market=market, watched=False)


@transaction.atomic
def market_delete(*, market: Market) -> None:
    """Delete the Market row and its ledger (coverage, gaps); stored candles stay (they are keyed by name)."""
    Market.objects.filter(pk=market.pk).delete()


class StaleLeaseError(ApplicationError):
    """A stream process wrote with a fencing token older than the market's: another process owns the market now."""


def ingest_candles(
    *, exchange: str, symbol: str, timeframe: str, df: pd.DataFrame, publish: bool = True, fence: int | None = None,
    ledger: bool = True,
) -> IngestResult:
    """Validate, upsert and ledger a batch of closed candles (close-time labels) in one transaction.

    Rejected rows are reported (and logged), never stored; the valid rest is. With `publish=True` the NEW candles are
    published on `market:{symbol}` and `candles_closed` is sent after commit; `publish=False` is for bulk history
    (imports, backfills) that no live consumer should react to. `fence` (stream processes): the writer's lease token;
    a token older than the one that last wrote this market raises StaleLeaseError and nothing is written.
    `ledger=False` (the stream's latency-critical write): the ledger is left to the caller, who refreshes it right
    after the commit (`refresh_ledger` over the new close times); a ledger that misses a stored candle heals on the
    next refresh around it.
    """
    with transaction.atomic():
        market = get_or_create_market(exchange, symbol, timeframe)
        (outcome,) = ingest_candles_many([CandleBatch(market, df, fence)], publish=publish, ledger=ledger)
    if isinstance(outcome, StaleLeaseError):
        raise outcome
    return outcome


@dataclass(frozen=True)
class CandleBatch:
    """One market's closed candles for ingest_candles_many (`fence`: see ingest_candles)."""

    market: Market
    df: pd.DataFrame
    fence: int | None = None


def ingest_candles_many(
    batches: list[CandleBatch], *, publish: bool = True, ledger: bool = True
) -> list[IngestResult | StaleLeaseError]:
    """ingest_candles of several markets (existing rows, one batch each) in one transaction and a fixed number of
    queries: a stream process stores every market's minute at the same moment. A market whose fence is stale gets
    its StaleLeaseError in the result list and nothing written; the others are stored."""
    checked = [validate_candles(b.df, market=f"{b.market.exchange} {b.market.symbol}",
                                timeframe=b.market.timeframe) for b in batches]
    for b, (_valid, rejected) in zip(batches, checked, strict=True):
        for r in rejected[:MAX_LOGGED_REJECTIONS]:
            logger.warning("%s", r.message)
        if len(rejected) > MAX_LOGGED_REJECTIONS:
            logger.warning("%s: %d more rejected rows", b.market, len(rejected) - MAX_LOGGED_REJECTIONS)
    out: list[IngestResult | StaleLeaseError] = []
    with transaction.atomic():
        # Serialise ingests of one market (collector vs backfill, two stream owners): upsert and ledger then see a
        # stable table. Locked in id order, so two writers of overlapping market sets cannot deadlock.
        fences = dict(Market.objects.select_for_update().filter(pk__in={b.market.pk for b in batches})
                      .order_by("pk").values_list("pk", "stream_fence"))
        writing: list[int] = []
        for i, b in enumerate(batches):
            stored_fence = fences[b.market.pk]
            if b.fence is not None and stored_fence > b.fence:
                out.append(StaleLeaseError(
                    f"{b.market.exchange} {b.market.symbol} {b.market.timeframe}: lease token {b.fence} is stale "
                    f"(market fenced at {stored_fence})", field="fence"))
                continue
            if b.fence is not None and stored_fence < b.fence:  # a new owner's first write
                Market.objects.filter(pk=b.market.pk).update(stream_fence=b.fence)
            out.append(None)  # type: ignore[arg-type] - filled below
            writing.append(i)
        frames = []
        for i in writing:
            m = batches[i].market
            frames.append(CandleFrame(m.exchange, m.symbol, m.timeframe, checked[i][0]))
        for i, up in zip(writing, upsert_candles_many(frames), strict=True):
            market, df, (valid, rejected) = batches[i].market, batches[i].df, checked[i]
            if up.inserted and ledger:  # only new rows change coverage
                refresh_ledger(market, start=up.inserted[0], end=up.inserted[-1])
            if publish and (up.inserted or up.updated_timestamps):
                new, corrected = _rows(valid, up.inserted), _rows(valid, up.updated_timestamps)
                transaction.on_commit(lambda m=market, n=new, c=corrected: _announce(m, n, c))
            out[i] = IngestResult(received=len(df), stored=len(valid), rejected=rejected,
                                  new_timestamps=up.inserted, updated=up.updated,
                                  updated_timestamps=up.updated_timestamps)
    return out


def _rows(valid: pd.DataFrame, timestamps: list[int]) -> pd.DataFrame:
    mask = np.isin(valid["timestamp"].to_numpy(), np.asarray(timestamps, dtype=np.int64))
    return valid.loc[mask].reset_index(drop=True)


def candle_payloads(market: Market, frame: pd.DataFrame) -> list[dict]:
    """The JSON payload of each candle published on `market:{symbol}`."""
    cols = {c: frame[c].to_numpy().tolist() for c in CANDLE_COLUMNS}
    base = {"exchange": market.exchange, "symbol": market.symbol, "timeframe": market.timeframe}
    return [
        {**base, "timestamp": t, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for t, o, h, lo, c, v in zip(
            cols["timestamp"], cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"], strict=True
        )
    ]


def _announce(market: Market, new: pd.DataFrame, corrected: pd.DataFrame | None = None) -> None:
    """After commit: publish (fire-and-forget) and signal dependent work. A failing receiver never undoes the ingest.

    Corrected candles (a stored candle whose values changed, e.g. a stream candle closed by the clock and rebuilt
    from REST with a late trade) are published again with `"corrected": true`, before the new ones (time order);
    `candles_closed` is sent for new candles only (a candle is decided once)."""
    channel = market_channel(market.symbol)
    messages = []
    if corrected is not None and len(corrected):
        messages += [(channel, {**payload, "corrected": True}) for payload in candle_payloads(market, corrected)]
    messages += [(channel, payload) for payload in candle_payloads(market, new)]
    publish_many(messages)
    if not len(new):
        return
    closed = (market, new["timestamp"].to_numpy().tolist())
    batch = getattr(_announcing, "closed", None)
    if batch is not None:
        batch.append(closed)
    else:
        _send_closed([closed])


_announcing = threading.local()


@contextmanager
def announce_together() -> Iterator[None]:
    """Within the block, the candles that commit are published at once as usual, but announced to dependent work in
    ONE `candles_closed` when the block ends (see apps.market.signals). Only committed candles are in it (they are
    added by on-commit hooks); nested blocks join the outer one."""
    if getattr(_announcing, "closed", None) is not None:
        yield
        return
    _announcing.closed = []
    try:
        yield
    finally:
        closed, _announcing.closed = _announcing.closed, None
        if closed:
            _send_closed(closed)


def _send_closed(closed: list[tuple[Market, list[int]]]) -> None:
    from apps.market.signals import candles_closed

    for receiver, result in candles_closed.send_robust(sender=Market, closed=closed):
        if isinstance(result, Exception):
            logger.error("candles_closed receiver %r failed for %s: %s", receiver,
                         ", ".join(str(m) for m, _ in closed), result, exc_info=result)


@dataclass
class TradesIngestResult:
    received: int
    inserted: int
    rejected: list[Rejection] = field(default_factory=list)
    partitions_created: list[str] = field(default_factory=list)


def _normalized_sides(trades: pd.DataFrame) -> np.ndarray:
    """Each trade's side as 'buy', 'sell' or '' (TRADE_SIDES), normalized once per distinct spelling, not per row."""
    if "side" not in trades.columns:
        return np.full(len(trades), "", dtype=object)
    codes, spellings = pd.factorize(trades["side"].fillna("").astype(str))
    sides = np.array([TRADE_SIDES.get(s.strip().lower(), "") for s in spellings], dtype=object)
    return sides[codes] if len(sides) else np.full(len(trades), "", dtype=object)


def _trade_ids(ids: pd.Series) -> np.ndarray:
    """Trade ids as text, cut to the column's 64 characters."""
    ids = ids.astype(str).to_numpy(dtype=object)
    if max(map(len, ids), default=0) > 64:
        ids = np.array([i[:64] for i in ids], dtype=object)
    return ids


def ingest_trades_detailed(*, exchange: str, symbol: str, df: pd.DataFrame) -> TradesIngestResult:
    """Validate trades, create the month partitions they need (PostgreSQL) and insert them, skipping known ones."""
    return ingest_trades_many([TradeFrame(exchange, symbol, df)])[0]


def ingest_trades_many(batches: list[TradeFrame]) -> list[TradesIngestResult]:
    """ingest_trades_detailed of several markets (one frame each) in one transaction: a stream process stores every
    market's raw trades with one COPY and one INSERT."""
    prepared: list[TradeFrame] = []
    results: list[TradesIngestResult] = []
    for b in batches:
        valid, rejected = validate_trades(b.df, market=f"{b.exchange} {b.symbol}")
        for r in rejected[:MAX_LOGGED_REJECTIONS]:
            logger.warning("%s", r.message)
        if len(valid) and "trade_id" not in valid.columns:
            # Deterministic ids (same rule as csvio): timestamp and 1-based position.
            valid = valid.assign(trade_id=[f"{t}-{i}" for i, t in enumerate(valid["timestamp"].tolist(), start=1)])
        if len(valid):
            valid = valid.assign(side=_normalized_sides(valid), trade_id=_trade_ids(valid["trade_id"]))
        prepared.append(TradeFrame(b.exchange, b.symbol, valid))
        results.append(TradesIngestResult(len(b.df), 0, rejected))
    if not any(len(p.df) for p in prepared):
        return results
    months = [months_in(p.df["timestamp"].to_numpy()) for p in prepared]
    with transaction.atomic():
        created = ensure_month_partitions(ym for own in months for ym in own)
        for result, own, inserted in zip(results, months, insert_trades_many(prepared), strict=True):
            result.inserted = inserted
            names = {partition_name(*ym) for ym in own}
            result.partitions_created = [name for name in created if name in names]
    return results


def ingest_trades(*, exchange: str, symbol: str, df: pd.DataFrame) -> int:
    """Store raw trades (see ingest_trades_detailed); returns how many were new."""
    return ingest_trades_detailed(exchange=exchange, symbol=symbol, df=df).inserted


def settled_source(exchange: str, symbol: str, timeframe: str):
    """The ledger's view of a stored series for rollups (aggregation.Settled), or None when nothing is stored.

    Fetched = from the first to the last stored candle; pending = the OPEN gaps between (not fetched yet). Gaps marked
    `empty` (the stream saw no trade; an imported file has no row there) or `exchange_outage` (backfill asked and the
    exchange had nothing) are settled: they contribute nothing and never hold a bucket back."""
    from apps.market.aggregation import Settled
    from apps.market.models import Candle

    rows = Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe=timeframe)
    first = rows.order_by("timestamp").values_list("timestamp", flat=True).first()
    if first is None:
        return None
    last = rows.order_by("-timestamp").values_list("timestamp", flat=True).first()
    pending = tuple(
        DataGap.objects.filter(market__exchange=exchange, market__symbol=symbol, market__timeframe=timeframe,
                               status=DataGap.Status.OPEN).values_list("start_timestamp", "end_timestamp")
    )
    return Settled(first=int(first), last=int(last), pending=pending)


def resample_stored(
    *,
    exchange: str,
    symbol: str,
    source_tf: str = "1m",
    target_tf: str,
    start: int | None = None,
    end: int | None = None,
    publish: bool = True,
) -> IngestResult:
    """Build `target_tf` candles from stored `source_tf` candles and ingest them (complete buckets only).

    `start`/`end` bound the TARGET close times (inclusive). Without `start`, it resumes at the last stored target
    candle (recomputed, unchanged rows are not rewritten), or from the beginning of the source history.
    """
    from apps.market.aggregation import resample_candles

    src, tgt = timeframe_ms(source_tf), timeframe_ms(target_tf)
    if start is None:
        start = last_candle_timestamp(exchange, symbol, target_tf)
    source_start = None if start is None else start - tgt + src
    source = candle_frame(exchange=exchange, symbol=symbol, timeframe=source_tf, start=source_start, end=end)
    frame = resample_candles(source, source_tf, target_tf, settled=settled_source(exchange, symbol, source_tf))
    return ingest_candles(exchange=exchange, symbol=symbol, timeframe=target_tf, df=frame, publish=publish)


def mark_source_empty(*, market: Market, start: int, end: int, note: str) -> int:
    """Open gaps lying wholly inside [start, end] (close times) become `empty`: the source was watched or read there
    and had nothing (no trade in those minutes / no row in the imported file). Rollups then build the buckets around
    them; backfill does not chase them. Returns how many gaps changed."""
    return mark_empty(market, start, end, note)


def record_stream_repair(*, market: Market, start: int, end: int, trades: int, candles: int, reason: str,
                         corrected: int = 0) -> None:
    StreamRepair.objects.create(
        market=market, start_timestamp=start, end_timestamp=end, trades=trades, candles=candles, corrected=corrected,
        reason=reason[:200],
    )


def rollup_targets(market: Market) -> list[str]:
    """Higher timeframes of the market's symbol that are watched: live rollups of its 1m candles feed them."""
    if market.timeframe != "1m":
        return []
    return list(
        Market.objects.filter(exchange=market.exchange, symbol=market.symbol, watched=True)
        .exclude(timeframe="1m")
        .values_list("timeframe", flat=True)
    )


def enqueue_rollups(*, market: Market, timestamps: list[int], targets: list[str], corrected: bool = False) -> list[str]:
    """After commit, a rollup task for every target timeframe whose bucket one of the new 1m candles closes.
    `corrected`: the 1m candles at `timestamps` changed; every target rebuilds the buckets holding them."""
    from apps.market.tasks import rollup_task

    if corrected:
        for tf in targets:
            ms = timeframe_ms(tf)
            start = min(-(-t // ms) * ms for t in timestamps)  # close time of the first bucket holding a change
            transaction.on_commit(lambda tf=tf, start=start: rollup_task.delay(market.exchange, market.symbol, tf,
                                                                               start))
        return list(targets) if timestamps else []
    due = [tf for tf in targets if any(t % timeframe_ms(tf) == 0 for t in timestamps)]
    for tf in due:
        transaction.on_commit(lambda tf=tf: rollup_task.delay(market.exchange, market.symbol, tf))
    return due


FIT_ROWS = 200


def describe_spacing(timestamps, timeframe: str) -> str | None:
    """None when close times fit `timeframe` (on its grid, rows a whole number of timeframes apart); else one phrase
    saying what the file looks like, e.g. "rows are 1h apart" or "timestamps are not on the 1h grid"."""
    from apps.market.timeframes import TIMEFRAME_MS

    tf = timeframe_ms(timeframe)
    if len(timestamps) == 0:
        return None
    names = {ms: name for name, ms in TIMEFRAME_MS.items()}

    def human(ms: int) -> str:
        if ms in names:
            return names[ms]
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"

    head = np.asarray(timestamps, dtype=np.int64)[:FIT_ROWS]  # the first rows, in file order: what the file is
    diffs = np.diff(np.unique(head))
    if len(diffs):
        values, counts = np.unique(diffs, return_counts=True)
        step = int(values[np.argmax(counts)])  # the usual spacing; holes and a stray bad row do not change it
        if step < tf or (step > tf and step % tf == 0 and counts.max() * 2 > len(diffs)):
            return f"rows are {human(step)} apart"
    off = head % tf != 0
    if off.sum() * 2 > len(head):  # most rows off the grid: a wrong timeframe, not a few bad rows
        return f"timestamps are not on the {timeframe} grid (e.g. {int(head[np.flatnonzero(off)[0]])})"
    return None


def changed_candles(*, exchange: str, symbol: str, timeframe: str, df: pd.DataFrame) -> list[int]:
    """Close times of stored candles that `df` (close-labelled) would change (values differ), ascending."""
    if len(df) == 0:
        return []
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    stored = candle_frame(exchange=exchange, symbol=symbol, timeframe=timeframe, start=int(ts.min()),
                          end=int(ts.max()))
    if len(stored) == 0:
        return []
    merged = stored.merge(df.drop_duplicates("timestamp", keep="last"), on="timestamp", suffixes=("_old", "_new"))
    diff = np.zeros(len(merged), dtype=bool)
    for col in ("open", "high", "low", "close", "volume"):
        a, b = merged[f"{col}_old"].to_numpy(dtype=np.float64), merged[f"{col}_new"].to_numpy(dtype=np.float64)
        diff |= ~np.isclose(a, b, rtol=1e-12, atol=0.0, equal_nan=False)
    return sorted(merged.loc[diff, "timestamp"].astype(np.int64).tolist())
