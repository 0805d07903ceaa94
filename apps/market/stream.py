"""The `stream` role: ccxt.pro trade streams -> 1m candles, stored and published within moments of the close.

One `StreamProcess` per `manage.py stream`. Every few seconds it renews the leases of its markets and tries to lease
the free ones (apps.market.lease: Redis, fenced), so each streamed market is owned by exactly one process and a dead
process's markets are taken over within the lease TTL plus one round. Each owned market runs a `MarketStream`:

1. (Re)connect at clock time c. The bucket in progress at c is never built from the stream (it started before we
   listened); the stream is trusted from the next minute boundary b = floor(c) + 1m.
2. Repair: once b has passed (a trade at/after b arrived, or the clock reached b + grace) every minute from the last
   stored candle up to b is rebuilt from REST `fetch_trades` (paged, same aggregation code) and stored, BEFORE any
   later candle is published; the ledger (StreamRepair) records it. So a start mid-minute, a dropped connection and
   a takeover all end the same way: no partial candle, no hole, no doubled candle.
3. Live: trades go into a `live.CandleBuilder`; a bucket closes when a trade at/after its close arrives or the clock
   passes close + grace (TRADEBOT_STREAM_GRACE_MS; the loop sleeps until that deadline). Closed candles go to the
   process's CandleWriter: every market's candles closed at the same moment are stored in one write (one
   transaction, a fixed number of queries) with the lease token (validate, upsert, publish `market:{symbol}` after
   commit, `candles_closed` -> bot ticks), then the ledger, the `empty` marks of minutes seen without trades and the
   rollups follow in a second transaction.
   A candle the clock closed and a late trade later changed is rebuilt from REST, stored and published again
   (`corrected`).
4. A network error, or no trade for `Market.stream_timeout` seconds (a silent stream), is a drop: close the client,
   back off (exponential, jittered) and go to 1.

Raw trades are stored (COPY into month partitions created on demand) when Market.store_raw_trades is on.
Database work runs in worker threads (Django's ORM is synchronous); one market's writes stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import operator
import os
import random
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ccxt
import numpy as np
import pandas as pd
from django.conf import settings
from django.db import close_old_connections, transaction

from apps.market.aggregation import trades_to_candles
from apps.market.live import CandleBuilder, Closed, fill_flat
from apps.market.models import Market
from apps.market.services import (
    CandleBatch,
    IngestResult,
    announce_together,
    ingest_candles_many,
    ingest_trades_many,
)
from apps.market.timeframes import format_ms
from apps.market.upsert import TradeFrame

logger = logging.getLogger(__name__)

TF = 60_000
RECHECK_MINUTES = 2  # on takeover / start, the last minutes stored by the previous owner are rebuilt from REST
MAX_REPAIR_MINUTES = 24 * 60  # older holes are left to backfill (an open gap in the ledger)
TRADES_LIMIT = 100_000
GC_GEN0_THRESHOLD = 10_000  # see stream_gc
# Exchanges whose public trade ids are consecutive per market (Binance's `t` / `a`): a jump means trades were lost on
# a connection that looked alive, which is handled like a drop (REST repair).
CONSECUTIVE_TRADE_IDS = {"binance", "binanceus"}
# One trade, one id: the stream must watch the id space REST repair reads. Binance numbers trades (`@trade` `t`,
# /api/v3/trades) and aggregate trades (`@aggTrade` `a`, /api/v3/aggTrades, ccxt's fetch_trades) separately, so the
# stream watches `<symbol>@aggTrade` and repair reads aggTrades; otherwise raw_trades would hold a repaired trade twice
# (once per id) and the consecutive-id check across REST and stream would fail on every connect.
WATCH_TRADES_PARAMS: dict[str, dict[str, str]] = {"binance": {"name": "aggTrade"}, "binanceus": {"name": "aggTrade"}}
FETCH_TRADES_PARAMS: dict[str, dict[str, str]] = {"binance": {"fetchTradesMethod": "publicGetAggTrades"},
                                                  "binanceus": {"fetchTradesMethod": "publicGetAggTrades"}}


GATHER_S = 0.003  # the writer waits this long after the first write of a batch for the others due at that moment
IDLE_TICK_S = 0.1  # checks of silence / closed sockets between trades, when the grace deadline is known
MAX_QUEUED_RAW_ROWS = 200_000  # raw trades waiting for the writer, all markets of a process (bounded memory)


class CandleWriter:
    """One writer for all the markets of a process. Every 1m market closes its candle at the same moment (the
    minute), so writing each market in its own transaction behind two threads queued the last market behind all the
    others (bench, 20 markets at 50x: 416 ms median wait, 1.45 s p99), and so did one transaction of per-market
    writes (~10 ms of round trips each). The writer takes every write waiting when it is free and stores them with
    ONE ingest_candles_many (a fixed number of queries, one commit); each market's candles are published after that
    commit. A market whose lease is stale gets its StaleLeaseError; a database error fails the whole write (each
    stream then stops, is restarted by its process and repairs from REST)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self._queue: list[tuple[CandleBatch, Callable[[IngestResult], None], asyncio.Future]] = []
        self._wake = asyncio.Event()
        self.batches = 0
        self.writes = 0

    async def write(self, batch: CandleBatch,
                    after: Callable[[IngestResult], None]) -> tuple[IngestResult, float, float]:
        """Store `batch` in the shared write (publishing on commit), then `after(result)` in a second transaction
        (work no subscriber waits for). Returns the result and the wall times the write started and committed."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((batch, after, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_S)  # the other markets closing at this same deadline join the batch
            self._wake.clear()
            queued, self._queue = self._queue, []
            if not queued:
                continue
            try:
                results = await loop.run_in_executor(self.pool, self._write_all, [(b, a) for b, a, _ in queued])
            except Exception as exc:  # noqa: BLE001 - the writer thread itself failed: every write of it failed
                results = [exc] * len(queued)
            self.batches += 1
            self.writes += len(queued)
            for (_batch, _after, future), value in zip(queued, results, strict=True):
                if future.done():
                    continue
                if isinstance(value, BaseException):
                    future.set_exception(value)
                else:
                    future.set_result(value)

    @staticmethod
    def _write_all(items: list[tuple[CandleBatch, Callable[[IngestResult], None]]]) -> list[Any]:
        close_old_connections()
        started = time.time()
        batches = [b for b, _after in items]
        with announce_together():  # the markets' bots ticked in shards packed over all of them
            outcomes: list[Any] = ingest_candles_many(batches, publish=True, ledger=False)
            committed = time.time()  # on_commit callbacks (publish) ran inside the write's exit, before this line
        with transaction.atomic():
            for (_batch, after), outcome in zip(items, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    continue
                try:
                    with transaction.atomic():
                        after(outcome)
                except Exception as exc:  # noqa: BLE001 - stored and published; the ledger heals on a later refresh
                    logger.error("stream: settling a live write failed: %s", exc)
        return [o if isinstance(o, BaseException) else (o, started, committed) for o in outcomes]


class RawTradeWriter:
    """One raw-trade writer for all the markets of a process: what every market queued while the last write ran is
    stored with ONE ingest_trades_many (one COPY, one INSERT, one commit); a write per market and flush paid a commit
    and a temp table apiece (~10 ms for a few hundred trades). In order per market; queued rows are bounded
    (MAX_QUEUED_RAW_ROWS): a market queueing more waits for the writer."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self._queue: list[tuple[Market, list[pd.DataFrame], Callable[[int], None]]] = []
        self._rows = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._busy = False
        self.batches = 0

    async def write(self, market: Market, frames: list[pd.DataFrame], stored: Callable[[int], None]) -> None:
        """Queue `frames` (raw trades of `market`, concatenated once, when written); `stored(n)` is called with the
        number inserted once written."""
        while self._rows >= MAX_QUEUED_RAW_ROWS:
            self._room.clear()
            await self._room.wait()
        self._queue.append((market, frames, stored))
        self._rows += sum(len(f) for f in frames)
        self._wake.set()

    async def drain(self) -> None:
        """Until everything queued so far is written (a stopping process keeps what it received)."""
        while self._queue or self._busy:
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            queued, self._queue = self._queue, []
            if not queued:
                continue
            groups: dict[int, tuple[Market, list[pd.DataFrame], Callable[[int], None]]] = {}
            for market, frames, stored in queued:
                groups.setdefault(market.pk, (market, [], stored))[1].extend(frames)
            self._busy = True
            try:
                counts = await loop.run_in_executor(self.pool, self._write_all, list(groups.values()))
            except Exception as exc:  # noqa: BLE001 - the candles are stored apart; raw trades are best effort
                logger.error("stream: storing the raw trades of %d markets failed: %s", len(groups), exc)
                counts = None
            finally:
                self._busy = False
                self._rows -= sum(len(f) for _m, frames, _s in queued for f in frames)
                self._room.set()
            self.batches += 1
            for (_market, _frames, stored), n in zip(groups.values(), counts or (), strict=False):
                stored(n)

    @staticmethod
    def _write_all(groups: list[tuple[Market, list[pd.DataFrame], Callable[[int], None]]]) -> list[int]:
        close_old_connections()
        frames = [TradeFrame(m.exchange, m.symbol, pd.concat(fs, ignore_index=True) if len(fs) > 1 else fs[0])
                  for m, fs, _stored in groups]
        return [r.inserted for r in ingest_trades_many(frames)]


class Dropped(Exception):
    """The stream is gone (network error, closed socket) or silent for too long."""


def wall_ms() -> int:
    return int(time.time() * 1000)


wall_ms.speed = 1.0  # data ms per wall ms: lets a stream sleep exactly until its grace deadline


def make_clock(url: str | None = None) -> Callable[[], int]:
    """'Now' in ms: the wall clock, or (testing/bench) the clock of a fake exchange at TRADEBOT_STREAM_CLOCK_URL."""
    url = url if url is not None else getattr(settings, "TRADEBOT_STREAM_CLOCK_URL", "")
    if not url:
        return wall_ms
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a configured local URL
        info = json.loads(resp.read())
    data0, wall0, speed = int(info["data_ms"]), time.time() * 1000.0, float(info["speed"])
    def clock() -> int:
        return int(data0 + (time.time() * 1000.0 - wall0) * speed)

    clock.speed = speed
    return clock


_CLOSING: set[asyncio.Future] = set()


async def _close_quietly(client) -> None:
    try:
        await asyncio.wait_for(client.close(), timeout=10)
    except Exception:  # noqa: BLE001 - closing a broken client
        pass


def _take_trades(cache) -> list[dict]:
    """Every trade ccxt.pro parsed into its cache since the last read, leaving the cache empty: each trade is read
    once, and a cache holding only unread trades keeps the process's heap small (a cache kept full, TRADES_LIMIT trade
    dicts per market, made every full garbage collection rescan them: about a quarter of the flood bench's time).
    Raises Dropped when the cache filled up, as trades may have been evicted unread."""
    if not cache:
        return []
    trades = list(cache)
    cache.clear()  # ccxt's own reset (deque and its update counters); only this loop reads the cache
    if len(trades) >= TRADES_LIMIT:
        raise Dropped("trade cache overflow: trades may have been evicted before the stream read them")
    return trades


_TS, _PRICE, _AMOUNT, _ID, _SIDE = (operator.itemgetter(k) for k in ("timestamp", "price", "amount", "id", "side"))


@dataclass
class TradeBatch:
    """The trades ccxt.pro parsed since the last watch_trades call, as arrays (one pass per field, no per-trade
    bookkeeping in Python)."""

    ts: np.ndarray
    price: np.ndarray
    amount: np.ndarray
    ids: np.ndarray | None  # integer trade ids (exchanges with consecutive ids), else None

    def raw(self, trades: list[dict], keep: np.ndarray) -> pd.DataFrame:
        """The `keep` rows as a raw-trades frame (ingest_trades)."""
        idx = np.flatnonzero(keep)
        return pd.DataFrame({
            "timestamp": self.ts[idx], "price": self.price[idx], "amount": self.amount[idx],
            "side": [trades[i].get("side") or "" for i in idx.tolist()],
            "trade_id": [str(trades[i].get("id") or "") for i in idx.tolist()],
        })


def _trade_arrays(trades: list[dict], *, ids: bool) -> TradeBatch:
    n = len(trades)
    trade_ids = None
    if ids:
        try:
            trade_ids = np.fromiter(map(int, map(_ID, trades)), np.int64, n)
        except (TypeError, ValueError):  # ids that are not numbers: _check_consecutive drops the stream
            trade_ids = None
    return TradeBatch(np.fromiter(map(_TS, trades), np.int64, n), np.fromiter(map(_PRICE, trades), np.float64, n),
                      np.fromiter(map(_AMOUNT, trades), np.float64, n), trade_ids)


def _check_consecutive(ids: np.ndarray | None, prev_id: int | None) -> int | None:
    """The last id, after checking that `ids` continue `prev_id` one by one (Binance's trade ids): a jump means
    trades were lost on a connection that looked alive."""
    if ids is None:
        raise Dropped("trade ids are not numbers: the consecutive-id check cannot hold")
    if prev_id is not None:
        ids = np.concatenate(([prev_id], ids))
    jumps = np.flatnonzero(np.diff(ids) != 1)
    if len(jumps):
        j = int(jumps[0])
        raise Dropped(f"trade ids jump from {int(ids[j])} to {int(ids[j + 1])}: trades were lost")
    return int(ids[-1])


@dataclass
class StreamStats:
    trades: int = 0
    candles: int = 0
    repairs: int = 0
    repaired_candles: int = 0
    corrected: int = 0  # stored candles rebuilt with trades that arrived after the clock closed them
    drops: int = 0
    silent_drops: int = 0
    late_trades: int = 0
    raw_trades: int = 0
    published: list[int] = field(default_factory=list)  # close times ingested as new, in order
    # live candles: (close time, wall s when handed to the writer, when the write started, when it committed)
    timings: list[tuple[int, float, float, float]] = field(default_factory=list)


class MarketStream:
    """One leased market: watch, aggregate, repair, ingest (see the module docstring)."""

    def __init__(self, market: Market, fence: int, *, clock: Callable[[], int], db: ThreadPoolExecutor,
                 writer: CandleWriter, raw_writer: RawTradeWriter, grace_ms: int | None = None,
                 client_config: dict | None = None, backoff: float = 0.5, max_backoff: float = 30.0,
                 tick_s: float = 0.02) -> None:
        self.market = market
        self.fence = fence
        self.clock = clock
        self.db = db
        self.grace = int(settings.TRADEBOT_STREAM_GRACE_MS if grace_ms is None else grace_ms)
        self.client_config = client_config or {}
        self.backoff, self.max_backoff, self.tick_s = backoff, max_backoff, tick_s
        self.writer, self.raw_writer = writer, raw_writer
        # With a clock that says its speed, the loop sleeps until the grace deadline (at most IDLE_TICK_S between
        # checks); otherwise it polls every tick_s.
        self.speed: float | None = getattr(clock, "speed", None)
        self.stats = StreamStats()
        self.last_stored: int | None = None  # close time of the newest stored 1m candle
        self.last_price: float | None = None  # its close price (flat fill)
        # Newest close time known complete: a candle closed by the clock (close + grace) is confirmed only once a
        # later trade arrives on the same connection; after a drop, repair starts here (and corrects what it finds).
        self.confirmed: int | None = None
        self.rollups: list[str] = []

    # --- db helpers ------------------------------------------------------------------------------------------------
    async def _db(self, fn, *args, pool: ThreadPoolExecutor | None = None, **kwargs):
        def run():
            close_old_connections()
            return fn(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(pool or self.db, run)

    def _load_state(self) -> tuple[int | None, float | None, list[str], Market]:
        from apps.market.models import Candle
        from apps.market.services import rollup_targets

        market = Market.objects.get(pk=self.market.pk)
        last = (Candle.objects.filter(exchange=market.exchange, symbol=market.symbol, timeframe="1m")
                .order_by("-timestamp").values_list("timestamp", "close").first())
        return (last[0] if last else None), (last[1] if last else None), rollup_targets(market), market

    def _store_repair(self, frame: pd.DataFrame, observed_from: int, through: int) -> tuple[list[int], int]:
        """REST-repaired candles and what follows a live write (_settle), in one transaction; returns the new close
        times and how many stored candles changed."""
        from apps.market.services import ingest_candles

        m = self.market
        with transaction.atomic():
            result = ingest_candles(exchange=m.exchange, symbol=m.symbol, timeframe="1m", df=frame, publish=True,
                                    fence=self.fence, ledger=False)
            self._settle(result, observed_from, through)
        return result.new_timestamps, result.updated

    def _settle(self, result, observed_from: int, through: int) -> None:
        """After the live candles are published: ledger, empty minutes, the confirmed mark, rollups (which read the
        ledger, so they are enqueued only now)."""
        from apps.market.ledger import refresh_ledger
        from apps.market.services import enqueue_rollups, mark_source_empty

        m = self.market
        empty = (observed_from, through, "stream: no trades in these minutes") if through > observed_from else None
        if result.new_timestamps:
            refresh_ledger(m, start=result.new_timestamps[0], end=result.new_timestamps[-1], empty=empty)
            if self.rollups:
                enqueue_rollups(market=m, timestamps=result.new_timestamps, targets=self.rollups)
        if result.updated_timestamps and self.rollups:
            enqueue_rollups(market=m, timestamps=result.updated_timestamps, targets=self.rollups, corrected=True)
        if self.confirmed is not None:
            Market.objects.filter(pk=m.pk).update(stream_confirmed=self.confirmed)
        if empty is not None and not result.new_timestamps:
            mark_source_empty(market=m, start=empty[0], end=empty[1], note=empty[2])

    # --- client ----------------------------------------------------------------------------------------------------
    def _client(self):
        from apps.market.providers.ccxt import make_pro_client

        config = {**self.client_config}
        config["options"] = {"tradesLimit": TRADES_LIMIT, **config.get("options", {})}
        return make_pro_client(self.market.exchange, config)

    # --- main loop -------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        self.last_stored, self.last_price, self.rollups, self.market = await self._db(self._load_state)
        if self.market.stream_confirmed is not None:  # what the previous owner knew complete; repair after it
            self.confirmed = self.market.stream_confirmed
        elif self.last_stored is not None:  # no stream wrote here yet: recheck the newest minutes anyway
            self.confirmed = self.last_stored - RECHECK_MINUTES * TF
        delay = self.backoff
        while True:
            client = self._client()
            try:
                await self._session(client)
                return
            except (Dropped, ccxt.NetworkError) as exc:
                self.stats.drops += 1
                logger.warning("stream %s dropped (%s: %s); reconnecting in %.1fs", self.market, type(exc).__name__,
                               exc, delay)
            except ccxt.ExchangeError as exc:
                self.stats.drops += 1
                logger.warning("stream %s: exchange error %s: %s; retry in %.1fs", self.market, type(exc).__name__,
                               exc, delay)
            finally:
                # Close in the background: a half-dead socket can take the whole close timeout to answer.
                closing = asyncio.ensure_future(_close_quietly(client))
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: processes do not reconnect in lockstep
            delay = min(delay * 2, self.max_backoff)

    async def _session(self, client) -> None:
        m = self.market
        await client.load_markets()
        connected_at = self.clock()
        boundary = (connected_at // TF) * TF + TF
        builder = CandleBuilder("1m", start=boundary, flat_fill=m.flat_fill, last_close=self.last_price)
        repaired = False
        ready: list[Closed] = []
        last_activity = time.monotonic()
        max_seen = -1
        late_seen = 0
        consecutive = m.exchange in CONSECUTIVE_TRADE_IDS
        prev_id: int | None = None
        first_live_id: int | None = None
        conns: set[int] | None = None  # the websocket clients of this session (ccxt may reconnect behind our back)
        watch_params = WATCH_TRADES_PARAMS.get(m.exchange, {})
        watch = asyncio.ensure_future(client.watch_trades(m.symbol, params=dict(watch_params)))
        raw_rows: list[pd.DataFrame] = []
        try:
            while True:
                done, _ = await asyncio.wait({watch}, timeout=self._timeout(builder))
                if watch in done:
                    watch.result()  # raises on a dropped connection
                    if conns is None:
                        conns = {id(c) for c in (client.clients or {}).values()}
                    watch = asyncio.ensure_future(client.watch_trades(m.symbol, params=dict(watch_params)))
                # The cache is read on every wake, not only when the watch resolved: trades parsed between a resolution
                # and the next watch_trades call resolve nothing, yet the clock must not close their candle without
                # them.
                new = _take_trades(client.trades.get(m.symbol))
                if new:
                    last_activity = time.monotonic()
                    self.stats.trades += len(new)
                    batch = _trade_arrays(new, ids=consecutive)
                    live = batch.ts >= boundary  # REST covers what came before the boundary
                    if consecutive and live.any():
                        prev_id = _check_consecutive(batch.ids[live], prev_id)
                        if first_live_id is None:
                            first_live_id = int(batch.ids[live][0])
                    max_seen = max(max_seen, int(batch.ts.max()))
                    closed = builder.add(batch.ts, batch.price, batch.amount)
                    if closed is not None:
                        ready.append(closed)
                    if m.store_raw_trades and live.any():
                        raw_rows.append(batch.raw(new, live))
                    if repaired and self.last_stored is not None:
                        self.confirmed = max(self.confirmed or 0, min(self.last_stored, (max_seen // TF) * TF))
                if conns is not None:
                    current = client.clients or {}
                    if {id(c) for c in current.values()} != conns or any(c.closed() for c in current.values()):
                        raise Dropped("websocket closed")
                now = self.clock()
                if not repaired and (max_seen >= boundary or now >= boundary + self.grace):
                    rest_last = await self._repair(client, boundary,
                                                   reason="stream (re)connected at " + format_ms(connected_at))
                    repaired = True
                    if consecutive and rest_last is not None:
                        if first_live_id is not None and first_live_id != rest_last + 1:
                            raise Dropped(f"first streamed trade {first_live_id} does not follow REST's {rest_last}")
                        if first_live_id is None:
                            prev_id = rest_last
                    if builder.open_at == boundary:  # nothing built live yet: flat fill continues from the repair
                        builder.last_close = self.last_price
                closed = builder.close_due(now, self.grace)
                if closed is not None:
                    ready.append(closed)
                if repaired and ready:
                    batch, ready = ready, []
                    await self._flush(batch)
                    if raw_rows:
                        await self._flush_raw(raw_rows)
                        raw_rows = []
                if builder.late > late_seen:  # a trade for a candle the clock already closed: rebuild it from REST
                    late_seen = builder.late
                    logger.warning("stream %s: %d trade(s) arrived after the clock closed their candle; rebuilding "
                                   "from REST (confirmed through %s)", m, builder.late,
                                   format_ms(self.confirmed) if self.confirmed else None)
                    late_floor = builder.late_floor
                    builder.late_floor = None
                    self.confirmed = late_floor if self.confirmed is None else min(self.confirmed, late_floor)
                    if repaired:
                        await self._repair(client, builder.open_at, reason="late trade after a clock close")
                silent_for = time.monotonic() - last_activity
                if silent_for > m.stream_timeout:
                    self.stats.silent_drops += 1
                    raise Dropped(f"no trade for {silent_for:.1f}s (stream_timeout {m.stream_timeout}s)")
        finally:
            self.stats.late_trades += builder.late
            watch.cancel()

    def _timeout(self, builder: CandleBuilder) -> float:
        """How long to wait for trades before looking at the clock again: until the current candle's grace deadline
        (so a clock close is not late by a polling interval), at most IDLE_TICK_S."""
        if not self.speed:
            return self.tick_s
        left_ms = (builder.close_at + self.grace - self.clock()) / self.speed
        return min(IDLE_TICK_S, max(left_ms / 1000.0 + 0.0005, 0.0))

    async def _flush(self, batch: list[Closed]) -> None:
        frames = [c.candles for c in batch if len(c.candles)]
        through = batch[-1].through
        observed_from = self.last_stored if self.last_stored is not None else through
        frame = pd.concat(frames, ignore_index=True) if frames else None
        if frame is None:
            return
        flushed = time.time()
        result, started, committed = await self.writer.write(CandleBatch(self.market, frame, self.fence),
                                                             lambda r: self._settle(r, observed_from, through))
        new = result.new_timestamps
        if len(self.stats.timings) < 100_000:  # where a candle's latency goes (bench/stream.py reports it)
            self.stats.timings += [(t, flushed, started, committed) for t in new]
        self.last_price = float(frame["close"].iat[-1])
        self.stats.candles += len(new)
        self.stats.published += new
        if new:
            self.last_stored = max(self.last_stored or 0, new[-1])

    async def _flush_raw(self, frames: list[pd.DataFrame]) -> None:
        await self.raw_writer.write(self.market, frames, self._raw_stored)

    def _raw_stored(self, n: int) -> None:
        self.stats.raw_trades += n

    # --- REST repair -----------------------------------------------------------------------------------------------
    async def _repair(self, client, boundary: int, *, reason: str) -> int | None:
        """Store every minute from the last confirmed candle up to `boundary` (exclusive end) from REST trades.
        Returns the id of the last trade before `boundary` when ids are numeric (None when nothing was fetched)."""
        m = self.market
        start = self.confirmed if self.confirmed is not None else self.last_stored
        start = start if start is not None else boundary - TF
        start = max(start, boundary - MAX_REPAIR_MINUTES * TF)
        if start >= boundary:
            return None
        delay = self.backoff
        while True:
            try:
                trades = await self._fetch_trades(client, start, boundary)
                break
            except ccxt.NetworkError as exc:  # keep later candles held back: a bot must never see a hole
                logger.warning("stream %s: REST repair failed (%s: %s); retry in %.1fs", m, type(exc).__name__,
                               exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)
        frame = trades_to_candles(trades["ts"], trades["price"], trades["amount"], "1m")
        frame = frame.loc[(frame["timestamp"] > start) & (frame["timestamp"] <= boundary)].reset_index(drop=True)
        if m.flat_fill:
            frame = fill_flat(frame, start + TF, boundary, TF, self.last_price)
        if len(frame):
            self.last_price = float(frame["close"].iat[-1])
        new: list[int] = []
        corrected = 0
        if len(frame):
            new, corrected = await self._db(self._store_repair, frame, start, boundary)
        if corrected:
            self.stats.corrected += corrected
            logger.warning("stream %s: %d candle(s) closed by the clock were missing trades; corrected from REST "
                           "(stored, republished with corrected=true, rollups rebuilt)", m, corrected)
        if m.store_raw_trades and len(trades["ts"]):
            await self._flush_raw([pd.DataFrame({"timestamp": trades["ts"], "price": trades["price"],
                                                 "amount": trades["amount"], "side": trades["side"],
                                                 "trade_id": trades["id"]})])
        await self._db(self._record_repair, start + TF, boundary, len(trades["ts"]), len(frame), reason, corrected)
        self.stats.repairs += 1
        self.stats.repaired_candles += len(new)
        self.stats.published += new
        self.last_stored = boundary if self.last_stored is None else max(self.last_stored, boundary)
        self.confirmed = boundary
        if new:
            logger.info("stream %s: repaired %d candles %s .. %s from %d REST trades", m, len(new),
                        format_ms(new[0]), format_ms(new[-1]), len(trades["ts"]))
        try:
            return max(int(i) for i in trades["id"]) if trades["id"] else None
        except ValueError:
            return None

    def _record_repair(self, start: int, end: int, trades: int, candles: int, reason: str, corrected: int) -> None:
        from apps.market.services import record_stream_repair

        record_stream_repair(market=self.market, start=start, end=end, trades=trades, candles=candles, reason=reason,
                             corrected=corrected)

    async def _fetch_trades(self, client, start: int, end: int) -> dict[str, Any]:
        """Trades with start <= timestamp < end, paged through fetch_trades (since + until), deduplicated by id."""
        ts: list[int] = []
        price: list[float] = []
        amount: list[float] = []
        side: list[str] = []
        ids: list[str] = []
        seen: set[str] = set()
        since = start
        limit = 1000
        window = 3_600_000  # Binance aggTrades: startTime..endTime at most one hour
        extra = FETCH_TRADES_PARAMS.get(self.market.exchange, {})
        while since < end:
            until = min(since + window, end) - 1
            page = await client.fetch_trades(self.market.symbol, since=since, limit=limit,
                                             params={**extra, "until": until})
            page = [t for t in page if start <= int(t["timestamp"]) < end]
            fresh = [t for t in page if str(t.get("id")) not in seen]
            for t in fresh:
                seen.add(str(t.get("id")))
                ts.append(int(t["timestamp"]))
                price.append(float(t["price"]))
                amount.append(float(t["amount"]))
                side.append(t.get("side") or "")
                ids.append(str(t.get("id") or ""))
            if len(page) >= limit and fresh:
                since = int(page[-1]["timestamp"])  # same-ms trades on the page edge come again: deduplicated
            else:
                since = until + 1
        order = np.argsort(np.asarray(ts, dtype=np.int64), kind="stable")
        return {
            "ts": np.asarray(ts, dtype=np.int64)[order], "price": np.asarray(price)[order],
            "amount": np.asarray(amount)[order], "side": [side[i] for i in order], "id": [ids[i] for i in order],
        }


def _warm_up() -> None:
    """Compile the aggregation kernels now: a first-call JIT compile inside the event loop would stall lease renewal."""
    trades_to_candles(np.array([0, 1], dtype=np.int64), np.array([1.0, 1.0]), np.array([1.0, 1.0]), "1m")


@contextlib.contextmanager
def stream_gc():
    """The garbage collector's settings while the stream role's loop runs: what start-up built (Django, ccxt, pandas,
    the compiled kernels) is frozen out of collection, and the youngest generation is collected every
    GC_GEN0_THRESHOLD allocations instead of Python's 700.

    The role allocates a few objects per trade. At the defaults, young collections ran every few hundred trades and
    promoted whatever was in flight (buffered frames, the batch being built) to the old generation, which set off a
    full collection of the ~650k start-up objects about once a second: a quarter of the flood bench's wall time.
    Cycles are still collected, less often; the settings are restored when the loop ends."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run_loop(coro):
    """Run the stream role's event loop (manage.py stream, bench): uvloop, whose transports and callbacks cost less
    per websocket frame than asyncio's own loop, under `stream_gc`."""
    import uvloop

    with stream_gc():
        return uvloop.run(coro)


class StreamProcess:
    """Leases streamed markets and runs a MarketStream for each one it owns (see the module docstring)."""

    def __init__(self, *, market_ids: list[int] | None = None, clock: Callable[[], int] | None = None,
                 owner: str | None = None, renew_ms: int | None = None, lease_ms: int | None = None,
                 grace_ms: int | None = None, max_markets: int | None = None) -> None:
        from apps.market.lease import Leases

        self.market_ids = market_ids
        self.clock = clock or make_clock()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leases = Leases(self.owner, ttl_ms=lease_ms)
        self.renew_s = int(renew_ms or settings.TRADEBOT_STREAM_RENEW_MS) / 1000.0
        self.grace_ms = grace_ms
        self.max_markets = max_markets
        self.db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stream-db")
        self.raw_db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-raw")
        self.raw_writer = RawTradeWriter(self.raw_db)
        self.streams: dict[int, MarketStream] = {}
        self.tasks: dict[int, asyncio.Task] = {}
        self.writer = CandleWriter(self.db)
        self._stop = asyncio.Event()
        # Renewal runs in its own thread: a flood of trades keeping the event loop busy must never cost the lease.
        self._owned: set[int] = set()
        self._lost: set[int] = set()
        self._keeper_lock = threading.Lock()
        self._keeper_stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_leases, name="stream-leases", daemon=True)
        _warm_up()

    def _keep_leases(self) -> None:
        while not self._keeper_stop.wait(self.renew_s):
            with self._keeper_lock:
                owned = list(self._owned)
            for mid in owned:
                try:
                    ok = self.leases.renew(mid)
                except Exception:  # noqa: BLE001 - Redis unreachable: the lease will expire, treat as lost
                    logger.exception("stream: renewing the lease of market %s failed", mid)
                    ok = False
                if not ok:
                    with self._keeper_lock:
                        self._owned.discard(mid)
                        self._lost.add(mid)

    def _markets(self) -> list[Market]:
        close_old_connections()
        qs = Market.objects.filter(mode=Market.Mode.STREAM, watched=True, timeframe="1m")
        if self.market_ids is not None:
            qs = qs.filter(pk__in=self.market_ids)
        return list(qs.order_by("pk"))

    def stop(self) -> None:
        self._stop.set()

    async def run(self, *, rounds: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        self._keeper.start()
        writers = [asyncio.create_task(self.writer.run(), name="stream-writer"),
                   asyncio.create_task(self.raw_writer.run(), name="stream-raw-writer")]
        try:
            while not self._stop.is_set():
                await self._round(await loop.run_in_executor(self.db, self._markets))
                n += 1
                if rounds is not None and n >= rounds:
                    break
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=self.renew_s)
                except TimeoutError:
                    pass
        finally:
            self._keeper_stop.set()
            for mid in list(self.tasks):
                await self._drop(mid, release=True)
            await self.raw_writer.drain()
            for writer in writers:
                writer.cancel()
            if _CLOSING:  # the clients being closed in the background: finish before the loop goes away
                await asyncio.gather(*list(_CLOSING), return_exceptions=True)
            self.db.shutdown(wait=True)
            self.raw_db.shutdown(wait=True)

    async def _round(self, markets: list[Market]) -> None:
        wanted = {m.pk: m for m in markets}
        for mid in list(self.tasks):
            task = self.tasks[mid]
            if mid not in wanted:
                await self._drop(mid, release=True)
            elif self._take_lost(mid):
                logger.warning("stream %s: lease lost; stopping it here", self.streams[mid].market)
                await self._drop(mid, release=False)
            elif task.done():
                exc = task.exception() if not task.cancelled() else None
                logger.error("stream %s stopped (%s); restarting", self.streams[mid].market, exc)
                await self._drop(mid, release=False)
        for mid, market in wanted.items():
            if mid in self.tasks:
                continue
            if self.max_markets is not None and len(self.tasks) >= self.max_markets:
                break
            fence = self.leases.acquire(mid)
            if fence is None:
                continue
            logger.info("stream %s: leased by %s (token %d)", market, self.owner, fence)
            with self._keeper_lock:
                self._owned.add(mid)
            stream = MarketStream(market, fence, clock=self.clock, db=self.db, writer=self.writer,
                                  raw_writer=self.raw_writer, grace_ms=self.grace_ms)
            self.streams[mid] = stream
            self.tasks[mid] = asyncio.create_task(stream.run(), name=f"stream-{market}")

    def _take_lost(self, mid: int) -> bool:
        with self._keeper_lock:
            if mid in self._lost:
                self._lost.discard(mid)
                return True
            return False

    async def _drop(self, mid: int, *, release: bool) -> None:
        with self._keeper_lock:
            self._owned.discard(mid)
        task = self.tasks.pop(mid)
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already logged / being stopped
            pass
        if release:
            self.leases.release(mid)
