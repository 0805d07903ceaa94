"""The stream role against the loopback fake Binance: ccxt.pro parses real recorded trades; candles are stored in
PostgreSQL and must equal the batch aggregation of the very trades the exchange had (nothing lost, nothing doubled)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest

from apps.market.aggregation import trades_to_candles
from apps.market.models import Market, StreamRepair
from apps.market.selectors import candle_frame
from apps.market.stream import StreamProcess
from apps.market.testing.binance import FakeBinanceThread, load_tape

TF = 60_000
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def xrp(tmp_path_factory):
    from tests.conftest import DATA_DIR

    return load_tape(DATA_DIR / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz", symbol="XRP/ETH")


@pytest.fixture
def fake_exchange(settings):
    """Start a FakeBinanceThread and point TRADEBOT_EXCHANGE_URLS at it."""
    started = []

    def start(tapes, **kwargs):
        fake = FakeBinanceThread(tapes, **kwargs).start()
        started.append(fake)
        settings.TRADEBOT_EXCHANGE_URLS = fake.exchange_urls()
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture(autouse=True)
def _clean_leases(redis_client):
    for key in redis_client.scan_iter("tradebot:stream:*"):
        redis_client.delete(key)
    yield


def stream_market(symbol: str, **fields) -> Market:
    market, _ = Market.objects.update_or_create(
        exchange="binance", symbol=symbol, timeframe="1m",
        defaults={"provider": "ccxt", "watched": True, "mode": Market.Mode.STREAM, **fields},
    )
    return market


def run_stream(fake, until_data_ms: int, *, during=None, grace_ms: int, processes: int = 1, **kwargs):
    """Run StreamProcess(es) with the fake's clock until it reaches until_data_ms (+ a close); `during(fake, now)`
    is called every 10 ms of wall time for the hooks."""

    async def main():
        procs = [StreamProcess(clock=fake.clock, grace_ms=grace_ms, renew_ms=500, lease_ms=6000, **kwargs)
                 for _ in range(processes)]
        tasks = [asyncio.create_task(p.run()) for p in procs]
        t0 = time.monotonic()
        while fake.server._hold is not None and time.monotonic() - t0 < 30:  # paused fake: start once subscribed
            if any(fake.subscribed(f"{mid.lower()}@aggTrade") for mid in fake.server.tapes):
                fake.hold(None)
            await asyncio.sleep(0.01)
        assert fake.server._hold is None, "no stream subscribed within 30 s"
        while fake.clock() < until_data_ms + TF + 2 * grace_ms:
            if during is not None:
                during(fake, fake.clock(), procs, tasks)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # let trades in flight (and repairs they trigger) land before stopping
        for p in procs:
            p.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        return procs

    return asyncio.run(main())


def expected_candles(fake, symbol: str, first_close: int, last_close: int) -> pd.DataFrame:
    trades = fake.served(symbol, until=last_close)
    trades = trades[(trades["timestamp"] >= first_close - TF) & (trades["timestamp"] < last_close)]
    return trades_to_candles(trades["timestamp"].to_numpy(), trades["price"].to_numpy(),
                             trades["amount"].to_numpy(), "1m")


def stored(symbol: str) -> pd.DataFrame:
    return candle_frame(exchange="binance", symbol=symbol, timeframe="1m")


def assert_equal_frames(got: pd.DataFrame, want: pd.DataFrame, fake=None, symbol=None) -> None:
    if fake is not None and not (got["open"].tolist() == want["open"].tolist()):
        print(_debug_diff(got, want, fake, symbol))
    assert got["timestamp"].tolist() == want["timestamp"].tolist()
    for col in ("open", "high", "low", "close"):
        assert got[col].tolist() == want[col].tolist(), col
    np.testing.assert_allclose(got["volume"].to_numpy(), want["volume"].to_numpy(), rtol=1e-12)


SPEED = 600  # one recorded minute per 100 ms
GRACE = SPEED * 40  # 40 ms of wall time, in data ms


def test_given_stream_started_mid_minute_when_trades_flow_then_candles_equal_batch_aggregation(xrp, fake_exchange):
    market = stream_market("XRP/ETH", stream_timeout=30)
    start = int(xrp.ts[0]) + 10 * TF + 30_000  # mid-minute: the first minute must come from REST, whole
    end = start + 25 * TF
    fake = fake_exchange([xrp], speed=SPEED, start_at=start, paused=True)
    (proc,) = run_stream(fake, end, grace_ms=GRACE)
    got = stored("XRP/ETH")
    assert len(got) > 5
    want = expected_candles(fake, "XRP/ETH", int(got["timestamp"].iat[0]), int(got["timestamp"].iat[-1]))
    assert_equal_frames(got, want)
    assert int(got["timestamp"].iat[0]) <= (start // TF) * TF + 2 * TF  # the started minute is not skipped
    assert StreamRepair.objects.filter(market=market).exists()
    stats = next(iter(proc.streams.values())).stats
    assert stats.trades > 0 and stats.late_trades == 0


def test_given_connection_dropped_mid_minute_when_stream_reconnects_then_missed_minutes_are_repaired(
    xrp, fake_exchange
):
    market = stream_market("XRP/ETH", stream_timeout=30)
    start = int(xrp.ts[0]) + 30 * TF
    end = start + 20 * TF
    fake = fake_exchange([xrp], speed=SPEED, start_at=start, paused=True)
    dropped = []

    def during(fake, now, procs, tasks):
        if not dropped and now >= start + 6 * TF + 25_000:  # in the middle of a minute
            dropped.append(fake.drop_connections())

    (proc,) = run_stream(fake, end, during=during, grace_ms=GRACE)
    got = stored("XRP/ETH")
    want = expected_candles(fake, "XRP/ETH", int(got["timestamp"].iat[0]), int(got["timestamp"].iat[-1]))
    assert dropped == [1]
    assert_equal_frames(got, want, fake, "XRP/ETH")
    assert int(got["timestamp"].iat[-1]) >= end - 5 * TF
    stream = next(iter(proc.streams.values()))
    assert stream.stats.drops >= 1
    assert stream.stats.published == sorted(stream.stats.published)  # never a later candle before a repaired one
    repairs = list(StreamRepair.objects.filter(market=market).order_by("created_at"))
    assert len(repairs) >= 2 and repairs[-1].start_timestamp <= start + 7 * TF


def test_given_silent_stream_when_timeout_passes_then_it_is_treated_as_dropped_and_repaired(xrp, fake_exchange):
    market = stream_market("XRP/ETH", stream_timeout=1)
    speed = 120  # a minute per 0.5 s
    start = int(xrp.ts[0]) + 60 * TF
    end = start + 12 * TF
    fake = fake_exchange([xrp], speed=speed, start_at=start, paused=True)
    state = {}

    def during(fake, now, procs, tasks):
        if "on" not in state and now >= start + 3 * TF:
            fake.silence(True)
            state["on"] = time.monotonic()
        elif "off" not in state and "on" in state and time.monotonic() - state["on"] > 2.0:
            fake.silence(False)
            state["off"] = now

    (proc,) = run_stream(fake, end, during=during, grace_ms=speed * 40)
    stream = next(iter(proc.streams.values()))
    assert stream.stats.silent_drops >= 1
    got = stored("XRP/ETH")
    want = expected_candles(fake, "XRP/ETH", int(got["timestamp"].iat[0]), int(got["timestamp"].iat[-1]))
    assert_equal_frames(got, want, fake, "XRP/ETH")
    assert int(got["timestamp"].iat[-1]) >= end - 5 * TF
    assert market.pk


def test_given_kraken_trades_with_flat_fill_when_streamed_then_candles_equal_krakens_own(fake_exchange):
    from tests.conftest import DATA_DIR

    folder = DATA_DIR / "kraken_matched_pair"
    tape = load_tape(folder / "kraken_XBTUSDT-trades_partA.csv", symbol="BTC/USDT")
    kraken = pd.read_csv(folder / "kraken_XBTUSDT-1m_partA.csv")
    kraken["timestamp"] += TF  # open -> close label
    stream_market("BTC/USDT", stream_timeout=60, flat_fill=True)
    speed = 1000
    start = int(tape.ts[0]) - 1
    fake = fake_exchange([tape], speed=speed, start_at=start, paused=True)
    run_stream(fake, int(kraken["timestamp"].iat[-1]), grace_ms=speed * 40)
    got = stored("BTC/USDT")
    first_trade_close = (int(tape.ts[0]) // TF) * TF + TF  # Kraken counts a trade before the recorded list there
    got = got[(got["timestamp"] > first_trade_close)
              & (got["timestamp"] <= int(kraken["timestamp"].iat[-1]))].reset_index(drop=True)
    want = kraken[(kraken["timestamp"] > first_trade_close)
                  & (kraken["timestamp"] <= int(got["timestamp"].iat[-1]))].reset_index(drop=True)
    assert len(got) > 200 and (want["volume"] == 0).sum() > 50  # Kraken's zero-volume minutes are in the check
    assert_equal_frames(got, want[["timestamp", "open", "high", "low", "close", "volume"]], fake, "BTC/USDT")


def _debug_diff(got, want, fake, symbol):  # pragma: no cover - diagnostics for a failing comparison
    merged = got.merge(want, on="timestamp", how="outer", suffixes=("_got", "_want"), indicator=True)
    bad = merged[(merged["_merge"] != "both") | (merged["open_got"] != merged["open_want"])
                 | (merged["close_got"] != merged["close_want"])]
    lines = [bad.head(5).to_string()]
    trades = fake.served(symbol)
    for t in bad["timestamp"].head(2).tolist():
        lines.append(trades[(trades["timestamp"] >= t - TF) & (trades["timestamp"] < t)].to_string())
    return "\n".join(lines)


class Channel:
    """A Redis subscriber on one `market:` channel (a symbol only this test uses: pub/sub is shared)."""

    def __init__(self, redis_client, symbol: str) -> None:
        import threading

        self.messages: list[dict] = []
        self._pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(f"market:{symbol}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import json

        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=0.1)
            if msg:
                self.messages.append(json.loads(msg["data"]))

    def close(self) -> list[dict]:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        return self.messages


def _minute_with_a_late_trade(tape, after: int, bucket_ms: int) -> tuple[int, int]:
    """(t1, close) of a minute closing a `bucket_ms` bucket, after `after`, with a first trade at t1 and more trades
    in that minute more than 5 s after it: lagging everything after t1 makes them late for that candle."""
    ts = tape.ts
    for close in range((after // bucket_ms + 1) * bucket_ms, int(ts[-1]), bucket_ms):
        inside = ts[(ts >= close - TF) & (ts < close)]
        if len(inside) >= 2 and inside[-1] - inside[0] > 5000 and (inside > inside[0]).any():
            return int(inside[0]), close
    raise AssertionError("no such minute in the tape")


def test_given_a_candle_closed_by_the_clock_when_a_late_trade_arrives_then_it_is_rebuilt_republished_and_recorded(
    xrp, fake_exchange, redis_client
):
    import dataclasses

    tape = dataclasses.replace(xrp, symbol="H10L/ETH")
    market = stream_market("H10L/ETH", stream_timeout=30)
    Market.objects.create(exchange="binance", symbol="H10L/ETH", timeframe="5m", provider="ccxt", watched=True)
    t1, close = _minute_with_a_late_trade(tape, int(tape.ts[0]) + 30 * TF, 5 * TF)
    start = close - 9 * TF + 30_000
    fake = fake_exchange([tape], speed=SPEED, start_at=start, paused=True)
    fake.lag(t1 + 1, 60 * TF)  # the websocket stalls right after the minute's first trade(s) ...
    caught_up = []

    def during(fake, now, procs, tasks):
        if not caught_up and now >= close + 3 * GRACE:  # ... until the clock closed that candle without the rest
            fake.lag(t1 + 1, 0)
            caught_up.append(now)

    channel = Channel(redis_client, "H10L/ETH")
    (proc,) = run_stream(fake, close + 4 * TF, during=during, grace_ms=GRACE, market_ids=[market.pk])
    messages = channel.close()

    got = stored("H10L/ETH")
    assert_equal_frames(got, expected_candles(fake, "H10L/ETH", int(got["timestamp"].iat[0]),
                                              int(got["timestamp"].iat[-1])))
    stream = next(iter(proc.streams.values()))
    assert stream.stats.late_trades >= 1 and stream.stats.corrected >= 1
    final = got.set_index("timestamp").loc[close]
    about = [m for m in messages if m["timestamp"] == close and m["timeframe"] == "1m"]
    assert [m.get("corrected", False) for m in about] == [False, True]  # stored, then rebuilt and published again
    assert about[0]["volume"] < about[1]["volume"] == pytest.approx(final["volume"], rel=1e-12)
    assert (about[1]["open"], about[1]["high"], about[1]["low"], about[1]["close"]) == (
        final["open"], final["high"], final["low"], final["close"])
    repairs = StreamRepair.objects.filter(market=market, corrected__gte=1)
    assert repairs.exists() and all(r.start_timestamp <= close <= r.end_timestamp for r in repairs)
    # the 5m candle built from the clock-closed minute is rebuilt too, and announced as corrected
    five = candle_frame(exchange="binance", symbol="H10L/ETH", timeframe="5m").set_index("timestamp").loc[close]
    minutes = got[(got["timestamp"] > close - 5 * TF) & (got["timestamp"] <= close)]
    assert five["volume"] == pytest.approx(minutes["volume"].sum(), rel=1e-12)
    assert (five["high"], five["low"], five["close"]) == (minutes["high"].max(), minutes["low"].min(),
                                                         minutes["close"].iat[-1])
    assert [m.get("corrected", False) for m in messages if m["timestamp"] == close and m["timeframe"] == "5m"] == [
        False, True]


@pytest.fixture
def _drop_new_partitions():
    """raw_trades partitions are DDL (a flush does not remove them): drop the ones this test created, so tests that
    create partitions themselves still see the month missing."""
    from django.db import connection

    from apps.market.partitions import existing_partitions

    before = set(existing_partitions())
    yield
    with connection.cursor() as cur:
        for name in sorted(set(existing_partitions()) - before):
            cur.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_given_raw_trades_stored_when_the_stream_is_repaired_by_rest_then_every_trade_is_stored_once_by_its_id(
    xrp, fake_exchange, _drop_new_partitions
):
    from apps.market.models import RawTrade

    market = stream_market("XRP/ETH", stream_timeout=30, store_raw_trades=True)
    start = int(xrp.ts[0]) + 40 * TF + 30_000  # mid-minute: REST completes it
    end = start + 14 * TF
    fake = fake_exchange([xrp], speed=SPEED, start_at=start, paused=True)
    dropped = []

    def during(fake, now, procs, tasks):
        if not dropped and now >= start + 6 * TF + 25_000:  # repair re-reads minutes the stream already stored
            dropped.append(fake.drop_connections())

    (proc,) = run_stream(fake, end, during=during, grace_ms=GRACE, market_ids=[market.pk])
    rows = list(RawTrade.objects.filter(exchange="binance", symbol="XRP/ETH").order_by("timestamp", "trade_id")
                .values_list("trade_id", "timestamp"))
    assert dropped == [1] and len(rows) > 50
    lo, hi = rows[0][1], rows[-1][1]
    window = (xrp.ts >= lo) & (xrp.ts <= hi)
    assert sorted(int(i) for i, _ in rows) == xrp.ids[window].tolist()  # aggregate ids: none doubled, none lost
    stream = next(iter(proc.streams.values()))
    assert stream.stats.repairs >= 2


def recorded_trades(tape, n: int) -> list[dict]:
    """The first `n` recorded trades in the shape ccxt.pro caches."""
    return [{"timestamp": int(t), "price": float(p), "amount": float(a), "id": str(i), "symbol": "XRP/ETH"}
            for t, p, a, i in zip(tape.ts[:n], tape.price[:n], tape.amount[:n], tape.ids[:n], strict=True)]


def test_given_trades_in_ccxts_cache_when_taken_then_each_is_read_once_and_the_cache_is_left_empty(xrp):
    from ccxt.async_support.base.ws.cache import ArrayCache

    from apps.market.stream import _take_trades

    trades = recorded_trades(xrp, 4)
    cache = ArrayCache(1000)
    for trade in trades[:3]:
        cache.append(trade)
    first = _take_trades(cache)
    cache.append(trades[3])
    assert first == trades[:3] and _take_trades(cache) == [trades[3]]
    assert len(cache) == 0 and _take_trades(cache) == [] and _take_trades(None) == []


def test_given_a_cache_that_filled_up_when_taken_then_the_stream_drops_as_trades_may_be_lost(xrp, monkeypatch):
    from ccxt.async_support.base.ws.cache import ArrayCache

    from apps.market import stream

    monkeypatch.setattr(stream, "TRADES_LIMIT", 3)
    cache = ArrayCache(3)
    for trade in recorded_trades(xrp, 5):  # the deque evicted the first two unread
        cache.append(trade)
    with pytest.raises(stream.Dropped, match="overflow"):
        stream._take_trades(cache)


def test_given_the_stream_loop_when_running_then_start_up_is_frozen_and_young_collections_are_rarer():
    import gc

    from apps.market.stream import GC_GEN0_THRESHOLD, run_loop

    before = (gc.get_threshold(), gc.get_freeze_count())

    async def inside():
        return gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()

    threshold, frozen, enabled = run_loop(inside())
    assert threshold == (GC_GEN0_THRESHOLD, *before[0][1:]) and frozen > 0 and enabled
    assert (gc.get_threshold(), gc.get_freeze_count()) == before  # restored when the loop ends
