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
            if any(fake.subscribed(f"{sym}@trade") for sym in ("xrpeth", "btcusdt")):
                fake.hold(None)
            await asyncio.sleep(0.01)
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
