"""A loopback fake of Binance's public spot API (REST + websocket), replaying recorded real trades.

It speaks the real protocol, so ccxt / ccxt.pro parse every byte themselves:

* websocket `ws://HOST:PORT/ws[/N]`: `{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}` ->
  `{"result": null, "id": 1}`, then one JSON event per trade (`<symbol>@trade` and `<symbol>@aggTrade` streams).
  Like Binance, trades and aggregate trades have separate id spaces (TRADE_ID_OFFSET): `@trade` and /trades carry
  trade ids, `@aggTrade` and /aggTrades aggregate ids.
* REST `GET /api/v3/exchangeInfo | time | aggTrades | trades | historicalTrades | klines` (klines are aggregated from
  the same trades, open-time labelled, the still-forming candle included like Binance does), and empty
  `/fapi/v1/exchangeInfo`, `/dapi/v1/exchangeInfo` so ccxt's default market loading works.

Time is virtual: `clock()` = data time of the replay, `origin + (wall - wall0) * speed`. Trades are pushed when the
clock passes their timestamp and REST serves only trades at or before the clock, so a consumer that asks for "now"
must use this clock (`GET /fake/clock`, or `FakeBinance.clock` in-process).

Hooks for reliability tests: `drop_connections()` (close every websocket now), `silence(on)` (keep sockets open, push
nothing; trades keep happening and stay available by REST), `lag(from_ms, lag_ms)` (the websocket pushes trades late
while REST has them on time), `fail_next(n, kind)` (the next n REST requests answer 429 / 5xx / garbage, time out
after `hang_s`, or serve klines that break the candle rules), `heal()` (drop the pending failures), `hold(until_ms)`
(pause the replay at a data time), `finish()`.

Usage (in-process, from sync code)::

    tape = load_tape("sample_data/freqtrade_xrp_eth/binance_XRP_ETH-trades.csv.gz", symbol="XRP/ETH")
    with FakeBinanceThread([tape], speed=50) as fake:
        settings.TRADEBOT_EXCHANGE_URLS = fake.exchange_urls()   # {"binance": {"ws": ..., "rest": ...}}

Or as a process: `python -m apps.market.testing.binance --tape PATH:SYMBOL --speed 1` prints one JSON line with the
URLs and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import uvloop
from aiohttp import WSMsgType, web

from apps.market.aggregation import trades_to_candles_arrays

REPO = Path(__file__).resolve().parents[3]
EXCHANGE_INFO = REPO / "sample_data" / "ccxt_fixtures" / "binance_rest_exchangeInfo_BTCUSDT_ETHUSDT.json"
FAULT = web.RequestKey("fake_fault", str)  # the failure kind a request was answered with (timeout, invalid)
KLINE_INTERVALS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
                   "4h": 14_400_000, "1d": 86_400_000}


def _num(x: float) -> str:
    return np.format_float_positional(float(x), trim="-")


# Binance numbers trades and aggregate trades separately (the aggTrades fixture: a = 966492862 holds trade
# f = l = 1111480471). The recorded ids are AGGREGATE ids (freqtrade downloads /api/v3/aggTrades); each recorded trade
# is served as one aggregate holding one trade whose trade id is its aggregate id + this offset, so a consumer that
# mixes the `@trade` stream (`t`) with aggTrades (`a`) sees two id spaces, as it would on Binance.
TRADE_ID_OFFSET = 144_987_609


@dataclass
class Tape:
    """Recorded trades of one market, in time order. `symbol` is the unified symbol served (e.g. "BTC/USDT").
    `ids` are aggregate trade ids (aggTrades `a`, `@aggTrade`); `trade_ids` the trade ids (`@trade` `t`, /trades)."""

    symbol: str
    ids: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    amount: np.ndarray
    buyer_maker: np.ndarray  # True = the seller was the taker (ccxt side "sell")
    source: str = ""

    @property
    def trade_ids(self) -> np.ndarray:
        return self.ids + TRADE_ID_OFFSET

    @property
    def market_id(self) -> str:
        return self.symbol.replace("/", "").upper()

    def shifted(self, ms: int, *, symbol: str | None = None, id_offset: int = 0) -> Tape:
        return Tape(symbol or self.symbol, self.ids + id_offset, self.ts + int(ms), self.price, self.amount,
                    self.buyer_maker, self.source)

    def frame(self, until: int | None = None) -> pd.DataFrame:
        """The trades served so far (timestamp <= until) as a trades frame (trade_id = the aggregate id)."""
        n = len(self.ts) if until is None else int(np.searchsorted(self.ts, until, side="right"))
        return pd.DataFrame({
            "timestamp": self.ts[:n], "price": self.price[:n], "amount": self.amount[:n],
            "side": np.where(self.buyer_maker[:n], "sell", "buy"), "trade_id": self.ids[:n].astype(str),
        })


def load_tape(path: str | Path, *, symbol: str) -> Tape:
    """A trades CSV of sample_data (`timestamp,price,amount,side,id,...`) as a tape, stably sorted by time."""
    df = pd.read_csv(path)
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    ids = df["id"].to_numpy(dtype=np.int64) if "id" in df.columns else np.arange(1, len(df) + 1, dtype=np.int64)
    return Tape(symbol, ids, df["timestamp"].to_numpy(dtype=np.int64), df["price"].to_numpy(dtype=np.float64),
                df["amount"].to_numpy(dtype=np.float64), (df["side"].astype(str) == "sell").to_numpy(),
                source=str(path))


@dataclass
class _Failure:
    remaining: int
    kind: str  # "429", "418", "500", "502", "503", "garbage", "timeout", "invalid"
    path: str | None = None


@dataclass
class Stats:
    ws_messages: int = 0
    rest_requests: int = 0
    connections: int = 0
    drops: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)  # injected failures answered, by kind


class FakeBinance:
    """The server (asyncio): `await start()`, then `ws_url` / `rest_url` / `exchange_urls()`; `await stop()`."""

    def __init__(self, tapes: list[Tape], *, speed: float = 1.0, start_at: int | None = None,
                 paused: bool = False, wait_subscribers: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.tapes = {t.market_id: t for t in tapes}
        self.speed = float(speed)
        first = min(int(t.ts[0]) for t in tapes if len(t.ts))
        self.origin = int(start_at) if start_at is not None else first
        self.host, self.port = host, port
        self.stats = Stats()
        self._wall0 = time.time() * 1000.0
        self._subs: dict[str, set[web.WebSocketResponse]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._failures: list[_Failure] = []
        self.hang_s = 3.0  # how long a "timeout" failure holds its answer
        self._silent = False
        self._lag: tuple[int, int] | None = None  # (from data ms, lag ms): see lag()
        # paused: the clock waits at start_at for hold(None), or until `wait_subscribers` streams are subscribed
        self._hold: int | None = self.origin if paused or wait_subscribers else None
        self._wait_subscribers = int(wait_subscribers)
        self._finished = False
        self._cursor = {mid: int(np.searchsorted(t.ts, self.origin, side="right")) for mid, t in self.tapes.items()}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self._tails: dict[tuple[str, str], list[str]] = {}  # see event_tails

    # --- clock -----------------------------------------------------------------------------------------------------
    def clock(self) -> int:
        """Data time now (ms): the replay's 'now'. Frozen while held at a data time."""
        t = int(self.origin + (time.time() * 1000.0 - self._wall0) * self.speed)
        return min(t, self._hold) if self._hold is not None else t

    def wall_of(self, data_ms: int) -> float:
        """Wall time (s since epoch) at which the clock reaches data_ms (ignores holds)."""
        return (self._wall0 + (data_ms - self.origin) / self.speed) / 1000.0

    # --- hooks -----------------------------------------------------------------------------------------------------
    def drop_connections(self) -> int:
        """Close every websocket now (like a network cut); returns how many. Clients must reconnect."""
        n = 0
        for ws in list(self._sockets):
            n += 1
            asyncio.ensure_future(ws.close(code=1011, message=b"dropped by test"))
        self._sockets.clear()
        self._subs.clear()
        self.stats.drops += n
        return n

    def silence(self, on: bool = True) -> None:
        """Keep connections open but push nothing (hummingbot's silent drop). Trades still happen (REST has them)."""
        self._silent = on

    def fail_next(self, count: int, kind: str = "500", path: str | None = None) -> None:
        """The next `count` REST requests (whose path contains `path`, if given) answer 429, 500, 503 or garbage;
        "timeout": the answer comes only after `hang_s` seconds (a client with a shorter timeout gives up first);
        "invalid": well-formed JSON whose klines break the candle rules (high < low, negative volume)."""
        if kind not in ("429", "418", "500", "502", "503", "garbage", "timeout", "invalid"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self._failures.append(_Failure(count, kind, path))

    def heal(self) -> int:
        """Drop every failure still pending (the exchange is healthy again); returns how many requests they had left."""
        left = sum(f.remaining for f in self._failures)
        self._failures.clear()
        return left

    def hold(self, until_ms: int | None) -> None:
        """Stop the clock when it reaches data time `until_ms`; None releases it, and it runs on from where it stopped
        (no jump: what the hold delayed is not skipped)."""
        if until_ms is None and self._hold is not None:
            held = self.clock()
            self._hold = None
            self._wall0 = time.time() * 1000.0 - (held - self.origin) / self.speed
        else:
            self._hold = until_ms
        self._wake.set()

    def lag(self, from_ms: int, lag_ms: int) -> None:
        """The websocket falls behind the matching engine: trades at/after data time `from_ms` are pushed `lag_ms`
        late (in order), while REST serves them on time. A lag longer than a consumer's grace makes its clock close a
        candle before the last trades of it arrive (late trades)."""
        self._lag = (int(from_ms), int(lag_ms))
        self._wake.set()

    def subscribed(self, stream: str) -> bool:
        """Whether some websocket subscribes `stream` (e.g. "btcusdt@trade")."""
        return bool(self._subs.get(stream))

    def finish(self) -> None:
        self._finished = True
        self._wake.set()

    def served(self, symbol: str, until: int | None = None) -> pd.DataFrame:
        """Trades of `symbol` that exist at data time `until` (default: now), as a trades frame."""
        tape = self.tapes[symbol.replace("/", "").upper()]
        return tape.frame(self.clock() if until is None else until)

    # --- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def exchange_urls(self, exchange: str = "binance") -> dict[str, dict[str, str]]:
        """The value for settings.TRADEBOT_EXCHANGE_URLS."""
        return {exchange: {"ws": self.ws_url, "rest": self.rest_url}}

    async def start(self) -> None:
        app = web.Application(middlewares=[self._hang])
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/ws/{idx}", self._ws)
        app.router.add_get("/fake/clock", self._clock)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/exchangeInfo", self._empty_info)
        app.router.add_get("/dapi/v1/exchangeInfo", self._empty_info)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/aggTrades", self._agg_trades)
        app.router.add_get("/api/v3/trades", self._trades)
        app.router.add_get("/api/v3/historicalTrades", self._trades)
        app.router.add_get("/api/v3/klines", self._klines)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._wall0 = time.time() * 1000.0
        self._tasks = [asyncio.create_task(self._replay())]

    async def stop(self) -> None:
        self._finished = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- replay ----------------------------------------------------------------------------------------------------
    async def _replay(self) -> None:
        """Push every trade once the clock passes it, to the subscribers of its streams."""
        while not self._finished:
            now = self.clock()
            next_due: int | None = None
            for mid, tape in self.tapes.items():
                i = self._cursor[mid]
                j = self._pushable(tape, now)
                if j > i:
                    self._cursor[mid] = j
                    await self._push(tape, i, j)
                if j < len(tape.ts):
                    due = int(tape.ts[j]) + (self._lag[1] if self._lag and tape.ts[j] >= self._lag[0] else 0)
                    next_due = due if next_due is None else min(next_due, due)
            if next_due is None:
                return
            delay = (next_due - self.clock()) / self.speed / 1000.0
            self._wake.clear()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, 0.5))
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    def _pushable(self, tape: Tape, now: int) -> int:
        """End index of the trades the websocket has sent by data time `now` (the lagged ones `lag` ms late)."""
        j = int(np.searchsorted(tape.ts, now, side="right"))
        if not self._lag:
            return j
        first_lagged = int(np.searchsorted(tape.ts, self._lag[0], side="left"))
        lagged = int(np.searchsorted(tape.ts, now - self._lag[1], side="right"))
        return lagged if lagged > first_lagged else min(j, first_lagged)

    async def _push(self, tape: Tape, i: int, j: int) -> None:
        if self._silent:
            return
        low = tape.market_id.lower()
        trade_subs = self._subs.get(f"{low}@trade", ())
        agg_subs = self._subs.get(f"{low}@aggTrade", ())
        if not trade_subs and not agg_subs:
            return
        event_time = str(self.clock())
        for subs, kind in ((trade_subs, "trade"), (agg_subs, "aggTrade")):
            if not subs:
                continue
            head = '{"e":"' + kind + '","E":' + event_time + ","
            tails = self.event_tails(tape, kind)
            for k in range(i, j):
                msg = head + tails[k]
                for ws in list(subs):
                    await self._send(ws, msg)

    def event_tails(self, tape: Tape, kind: str) -> list[str]:
        """Every trade of the tape as its `kind` event after the event time, encoded once (on subscribe): a push
        only prefixes the event time, so the replay's own cost per message stays small next to what it measures."""
        key = (tape.market_id, kind)
        if key not in self._tails:
            mid = tape.market_id
            price = [_num(x) for x in tape.price]
            amount = [_num(x) for x in tape.amount]
            rows = zip(tape.ids.tolist(), tape.ts.tolist(), price, amount, tape.buyer_maker.tolist(), strict=True)
            if kind == "trade":
                events = ({"s": mid, "t": a + TRADE_ID_OFFSET, "p": p, "q": q, "T": t, "m": m, "M": True}
                          for a, t, p, q, m in rows)
            else:
                events = ({"s": mid, "a": a, "p": p, "q": q, "f": a + TRADE_ID_OFFSET, "l": a + TRADE_ID_OFFSET,
                           "T": t, "m": m, "M": True} for a, t, p, q, m in rows)
            self._tails[key] = [orjson.dumps(e).decode()[1:] for e in events]
        return self._tails[key]

    async def _send(self, ws: web.WebSocketResponse, msg: str) -> None:
        if ws.closed:
            return
        try:
            await ws.send_str(msg)
            self.stats.ws_messages += 1
        except (ConnectionError, RuntimeError):
            self._forget(ws)

    def _forget(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)
        for subs in self._subs.values():
            subs.discard(ws)

    # --- websocket -------------------------------------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        self.stats.connections += 1
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    await ws.send_str(json.dumps({"error": {"code": 2, "msg": "Invalid JSON"}}))
                    continue
                method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
                if method == "SUBSCRIBE":
                    for name in params:
                        self._subs.setdefault(name, set()).add(ws)
                        low, _, kind = name.partition("@")
                        tape = self.tapes.get(low.upper())
                        if tape is not None and kind in ("trade", "aggTrade"):
                            self.event_tails(tape, kind)
                    if self._wait_subscribers and sum(1 for v in self._subs.values() if v) >= self._wait_subscribers:
                        self._wait_subscribers = 0
                        self.hold(None)
                elif method == "UNSUBSCRIBE":
                    for name in params:
                        self._subs.get(name, set()).discard(ws)
                await ws.send_str(json.dumps({"result": None, "id": rid}))
        finally:
            self._forget(ws)
        return ws

    # --- REST ------------------------------------------------------------------------------------------------------
    def _failure(self, request: web.Request) -> web.Response | None:
        self.stats.rest_requests += 1
        self.stats.by_path[request.path] = self.stats.by_path.get(request.path, 0) + 1
        for f in self._failures:
            if f.remaining > 0 and (f.path is None or f.path in request.path):
                f.remaining -= 1
                self.stats.faults[f.kind] = self.stats.faults.get(f.kind, 0) + 1
                request[FAULT] = f.kind
                if f.kind == "invalid":
                    return None  # the handler answers, with broken candles (klines)
                if f.kind == "timeout":  # sent after hang_s by the middleware (_hang)
                    return web.Response(text="Gateway Timeout", status=504)
                if f.kind == "garbage":
                    return web.Response(text="<html>upstream hiccup\x00", status=200, content_type="application/json")
                status = int(f.kind)
                if status in (418, 429):
                    return web.json_response({"code": -1003, "msg": "Too many requests; IP banned until soon."},
                                             status=status, headers={"Retry-After": "1"})
                return web.Response(text="Service Unavailable", status=status)  # what a gateway in front answers
        return None

    @web.middleware
    async def _hang(self, request: web.Request, handler) -> web.StreamResponse:
        """A "timeout" failure: the answer (504) leaves only after hang_s seconds."""
        response = await handler(request)
        if request.get(FAULT) == "timeout":
            await asyncio.sleep(self.hang_s)
        return response

    async def _clock(self, request: web.Request) -> web.Response:
        return web.json_response({"data_ms": self.clock(), "wall_ms": int(time.time() * 1000), "speed": self.speed})

    async def _time(self, request: web.Request) -> web.Response:
        return self._failure(request) or web.json_response({"serverTime": self.clock()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        failed = self._failure(request)
        if failed:
            return failed
        info = json.loads(EXCHANGE_INFO.read_text())
        template = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
        symbols = []
        for mid, tape in self.tapes.items():
            base, quote = tape.symbol.split("/")
            entry = copy.deepcopy(template)
            entry.update(symbol=mid, baseAsset=base, quoteAsset=quote)
            for flt in entry.get("filters", []):  # loosen filters so any recorded price/amount is valid
                if flt.get("filterType") == "PRICE_FILTER":
                    flt.update(minPrice="0.00000001", tickSize="0.00000001")
                if flt.get("filterType") == "LOT_SIZE":
                    flt.update(minQty="0.00000001", stepSize="0.00000001")
            symbols.append(entry)
        info.update(serverTime=self.clock(), symbols=symbols)
        return web.json_response(info)

    async def _empty_info(self, request: web.Request) -> web.Response:
        return self._failure(request) or web.json_response(
            {"timezone": "UTC", "serverTime": self.clock(), "rateLimits": [], "exchangeFilters": [], "assets": [],
             "symbols": []})

    def _market_query(self, request: web.Request) -> _Query | web.Response:
        """The parsing every market-data endpoint shares, done once: the failure hooks, the symbol, the limit
        (default 500, at most 1000), the trades that exist now, and integer parameters (Binance answers -1100 for
        one that is not)."""
        failed = self._failure(request)
        if failed:
            return failed
        q = request.query
        tape = self.tapes.get(q.get("symbol", ""))
        if tape is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        ints: dict[str, int] = {}
        for name in ("limit", "fromId", "startTime", "endTime"):
            if name in q:
                try:
                    ints[name] = int(q[name])
                except ValueError:
                    return web.json_response(
                        {"code": -1100, "msg": f"Illegal characters found in parameter '{name}'."}, status=400)
        limit = min(ints.pop("limit", 500), 1000)
        return _Query(tape, limit, int(np.searchsorted(tape.ts, self.clock(), side="right")), ints, q)

    async def _agg_trades(self, request: web.Request) -> web.Response:
        """Aggregate trades: ids `a` in the aggregate id space (fromId too), f..l the trade ids it holds."""
        query = self._market_query(request)
        if isinstance(query, web.Response):
            return query
        tape, n, p = query.tape, query.visible, query.params
        if "fromId" in p:
            lo = int(np.searchsorted(tape.ids[:n], p["fromId"], side="left"))
        elif "startTime" in p:
            lo = int(np.searchsorted(tape.ts[:n], p["startTime"], side="left"))
        else:
            lo = max(0, n - query.limit)
        hi = n
        if "endTime" in p:
            hi = min(hi, int(np.searchsorted(tape.ts[:n], p["endTime"], side="right")))
        hi = min(hi, lo + query.limit)
        rows = [{"a": int(tape.ids[k]), "p": _num(tape.price[k]), "q": _num(tape.amount[k]),
                 "f": int(tape.trade_ids[k]), "l": int(tape.trade_ids[k]), "T": int(tape.ts[k]),
                 "m": bool(tape.buyer_maker[k]), "M": True} for k in range(lo, hi)]
        return _json(rows)

    async def _trades(self, request: web.Request) -> web.Response:
        """Recent / historical trades: ids in the TRADE id space (fromId too), not the aggregate one."""
        query = self._market_query(request)
        if isinstance(query, web.Response):
            return query
        tape, n = query.tape, query.visible
        if "fromId" in query.params:
            lo = int(np.searchsorted(tape.trade_ids[:n], query.params["fromId"]))
        else:
            lo = max(0, n - query.limit)
        hi = min(n, lo + query.limit)
        rows = [{"id": int(tape.trade_ids[k]), "price": _num(tape.price[k]), "qty": _num(tape.amount[k]),
                 "quoteQty": _num(tape.price[k] * tape.amount[k]), "time": int(tape.ts[k]),
                 "isBuyerMaker": bool(tape.buyer_maker[k]), "isBestMatch": True} for k in range(lo, hi)]
        return _json(rows)

    async def _klines(self, request: web.Request) -> web.Response:
        query = self._market_query(request)
        if isinstance(query, web.Response):
            return query
        interval = query.raw.get("interval", "")
        if interval not in KLINE_INTERVALS:
            return web.json_response({"code": -1120, "msg": "Invalid interval."}, status=400)
        tape, n, p, limit = query.tape, query.visible, query.params, query.limit
        tf = KLINE_INTERVALS[interval]
        lo = int(np.searchsorted(tape.ts[:n], (p["startTime"] // tf) * tf, side="left")) if "startTime" in p else 0
        hi = n
        if "endTime" in p:
            hi = min(hi, int(np.searchsorted(tape.ts[:n], (p["endTime"] // tf) * tf + tf, side="left")))
        t, o, h, lo_, c, v = trades_to_candles_arrays(tape.ts[lo:hi], tape.price[lo:hi], tape.amount[lo:hi],
                                                       interval)
        window = slice(None, limit) if "startTime" in p else slice(-limit, None)
        t, o, h, lo_, c, v = (a[window] for a in (t, o, h, lo_, c, v))
        if request.get(FAULT) == "invalid":  # high and low swapped, volume negative: every rule broken
            h, lo_, v = lo_ - 1.0, h + 1.0, -v - 1.0
        rows = [[int(t[k] - tf), _num(o[k]), _num(h[k]), _num(lo_[k]), _num(c[k]), _num(v[k]), int(t[k] - 1),
                 "0", 0, "0", "0", "0"] for k in range(len(t))]
        return _json(rows)


@dataclass
class _Query:
    """A parsed market-data request: the tape, the capped limit, how many of its trades exist now (`visible`), the
    integer parameters present (fromId, startTime, endTime) and the raw query."""

    tape: Tape
    limit: int
    visible: int
    params: dict[str, int]
    raw: Mapping[str, str]


def _json(rows: list) -> web.Response:
    return web.Response(body=orjson.dumps(rows), content_type="application/json")


class FakeBinanceThread:
    """FakeBinance on its own event loop in a daemon thread, for synchronous callers (tests, bench). Context manager.

    Hooks are forwarded thread-safely: `drop_connections()`, `silence()`, `lag()`, `fail_next()`, `heal()`, `hold()`;
    `clock()`, `served()`, `stats` are read directly.
    """

    def __init__(self, tapes: list[Tape], **kwargs) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = FakeBinance.__new__(FakeBinance)
        self._kwargs, self._tapes = kwargs, tapes
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-binance", daemon=True)

    def start(self) -> FakeBinanceThread:
        self._thread.start()

        async def make() -> FakeBinance:
            server = FakeBinance(self._tapes, **self._kwargs)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeBinanceThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, fn, *args):
        return asyncio.run_coroutine_threadsafe(_async(fn, *args), self.loop).result(timeout=10)

    def drop_connections(self) -> int:
        return self._call(self.server.drop_connections)

    def silence(self, on: bool = True) -> None:
        self._call(self.server.silence, on)

    def fail_next(self, count: int, kind: str = "500", path: str | None = None) -> None:
        self._call(self.server.fail_next, count, kind, path)

    def heal(self) -> int:
        return self._call(self.server.heal)

    def hold(self, until_ms: int | None) -> None:
        self._call(self.server.hold, until_ms)

    def lag(self, from_ms: int, lag_ms: int) -> None:
        self._call(self.server.lag, from_ms, lag_ms)

    def subscribed(self, stream: str) -> bool:
        return self.server.subscribed(stream)

    def clock(self) -> int:
        return self.server.clock()

    def served(self, symbol: str, until: int | None = None) -> pd.DataFrame:
        return self.server.served(symbol, until)

    def exchange_urls(self, exchange: str = "binance") -> dict[str, dict[str, str]]:
        return self.server.exchange_urls(exchange)

    @property
    def stats(self) -> Stats:
        return self.server.stats


async def _async(fn, *args):
    return fn(*args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve recorded trades through a fake Binance (loopback).")
    parser.add_argument("--tape", action="append", required=True, help="PATH:SYMBOL, e.g. trades.csv.gz:XRP/ETH")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--start-at", type=int, default=None, help="data time (ms) the clock starts at")
    parser.add_argument("--shift-ms", type=int, default=0, help="add this to every recorded timestamp")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--wait-subscribers", type=int, default=0,
                        help="keep the clock at --start-at until this many streams are subscribed")
    args = parser.parse_args(argv)
    tapes = []
    for spec in args.tape:
        path, _, symbol = spec.rpartition(":")
        tapes.append(load_tape(path, symbol=symbol).shifted(args.shift_ms))

    async def serve() -> None:
        server = FakeBinance(tapes, speed=args.speed, start_at=args.start_at, port=args.port,
                             wait_subscribers=args.wait_subscribers)
        await server.start()
        print(json.dumps({**server.exchange_urls(), "clock_url": f"{server.rest_url}/fake/clock"}), flush=True)
        while True:
            await asyncio.sleep(3600)

    try:
        uvloop.run(serve())
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(0)


if __name__ == "__main__":
    main()
