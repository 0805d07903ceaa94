"""The loopback fake Binance: ccxt and ccxt.pro parse its answers (recorded real trades) like the real exchange's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import ccxt
import numpy as np
import pytest

from apps.market.aggregation import trades_to_candles_arrays
from apps.market.providers.ccxt import apply_url_overrides, make_client, make_pro_client, override_urls
from apps.market.testing.binance import FakeBinanceThread, load_tape

XRP = Path(__file__).resolve().parents[4] / "sample_data" / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"


@pytest.fixture(scope="module")
def tape():
    return load_tape(XRP, symbol="XRP/ETH")


def test_given_url_overrides_when_applied_then_host_replaced_and_paths_kept():
    api = {"public": "https://api.binance.com/api/v3", "ws": {"spot": "wss://stream.binance.com:9443/ws",
                                                              "ws-api": {"spot": "wss://ws-api.binance.com:443/ws-api/v3"}}}
    out = override_urls(api, {"ws": "ws://127.0.0.1:9000", "rest": "http://127.0.0.1:9001"})
    assert out == {"public": "http://127.0.0.1:9001/api/v3", "ws": {"spot": "ws://127.0.0.1:9000/ws",
                                                                   "ws-api": {"spot": "ws://127.0.0.1:9000/ws-api/v3"}}}


def test_given_setting_when_client_made_then_ccxt_and_pro_point_at_it(settings):
    settings.TRADEBOT_EXCHANGE_URLS = {"binance": {"ws": "ws://127.0.0.1:1", "rest": "http://127.0.0.1:2"}}
    assert make_client("binance").urls["api"]["public"] == "http://127.0.0.1:2/api/v3"

    async def pro():
        client = make_pro_client("binance")
        try:
            return client.urls["api"]["ws"]["spot"]
        finally:
            await client.close()

    assert asyncio.run(pro()) == "ws://127.0.0.1:1/ws"


def test_given_fake_when_ccxt_fetches_then_trades_and_klines_are_the_recorded_ones(tape):
    start = int(tape.ts[0]) + 3_600_000
    with FakeBinanceThread([tape], speed=1, start_at=start) as fake:
        client = apply_url_overrides(make_client("binance"), "binance", fake.exchange_urls())
        trades = client.fetch_trades("XRP/ETH", since=int(tape.ts[0]), limit=1000)
        assert [int(t["id"]) for t in trades] == tape.ids[: len(trades)].tolist()
        assert [t["price"] for t in trades] == tape.price[: len(trades)].tolist()
        rows = client.fetch_ohlcv("XRP/ETH", "1m", since=int(tape.ts[0]) // 60_000 * 60_000, limit=30)
        n = int(np.searchsorted(tape.ts, start, side="right"))
        t, o, h, lo, c, v = trades_to_candles_arrays(tape.ts[:n], tape.price[:n], tape.amount[:n], "1m")
        assert [r[0] + 60_000 for r in rows] == t[:30].tolist()
        assert [r[1:6] for r in rows] == np.column_stack([o, h, lo, c, v])[:30].tolist()


def test_given_failure_hooks_when_ccxt_fetches_then_it_sees_429_5xx_and_garbage(tape):
    with FakeBinanceThread([tape], speed=1, start_at=int(tape.ts[100])) as fake:
        client = apply_url_overrides(make_client("binance"), "binance", fake.exchange_urls())
        client.load_markets()
        for kind, error in (("429", ccxt.DDoSProtection), ("503", ccxt.ExchangeNotAvailable),
                            ("500", ccxt.ExchangeNotAvailable)):
            fake.fail_next(1, kind, path="aggTrades")
            with pytest.raises(error):
                client.fetch_trades("XRP/ETH", limit=5)
        fake.fail_next(1, "garbage", path="aggTrades")
        try:  # ccxt does not raise on a 200 with a body that is not JSON: whatever it returns holds no trade
            assert not [t for t in client.fetch_trades("XRP/ETH", limit=5) if t.get("price")]
        except ccxt.BaseError:
            pass
        assert len(client.fetch_trades("XRP/ETH", limit=5)) == 5


def test_given_fake_when_ccxt_reads_trades_and_agg_trades_then_each_has_its_own_id_space_like_binance(tape):
    with FakeBinanceThread([tape], speed=1, start_at=int(tape.ts[0]) + 3_600_000) as fake:
        client = apply_url_overrides(make_client("binance"), "binance", fake.exchange_urls())
        since = int(tape.ts[0])
        agg = client.fetch_trades("XRP/ETH", since=since, limit=50)  # ccxt's default: /api/v3/aggTrades
        plain = client.fetch_trades("XRP/ETH", limit=50, params={"fetchTradesMethod": "publicGetTrades",
                                                                 "fromId": int(tape.trade_ids[0])})
        assert [int(t["id"]) for t in agg] == tape.ids[:50].tolist()
        assert [int(t["id"]) for t in plain] == tape.trade_ids[:50].tolist()
        assert [int(t["info"]["f"]) for t in agg] == tape.trade_ids[:50].tolist()  # the trades each aggregate holds
        assert [t["timestamp"] for t in agg] == [t["timestamp"] for t in plain]
        with pytest.raises(ccxt.BadRequest):  # parameters are parsed once, for every endpoint, like Binance does
            client.public_get_aggtrades({"symbol": "XRPETH", "startTime": "soon"})


@pytest.mark.parametrize(("stream", "ids"), [("trade", "trade_ids"), ("aggTrade", "ids")])
def test_given_fake_when_pro_watches_trades_then_every_trade_arrives_in_order_and_a_drop_is_seen(tape, stream, ids):
    start = int(tape.ts[0]) - 1
    with FakeBinanceThread([tape], speed=2000, start_at=start, paused=True) as fake:  # waits until we subscribed

        async def watch():
            client = apply_url_overrides(make_pro_client("binance", {"options": {"tradesLimit": 100_000}}), "binance",
                                         fake.exchange_urls())
            try:
                first = asyncio.ensure_future(client.watch_trades("XRP/ETH", params={"name": stream}))
                while not fake.subscribed(f"xrpeth@{stream}"):
                    await asyncio.sleep(0.01)
                fake.hold(None)
                await first
                while len(client.trades["XRP/ETH"]) < 300:
                    await client.watch_trades("XRP/ETH", params={"name": stream})
                seen = [int(t["id"]) for t in client.trades["XRP/ETH"]]
                fake.drop_connections()
                with pytest.raises(ccxt.NetworkError):
                    while True:
                        await client.watch_trades("XRP/ETH", params={"name": stream})
            finally:
                await client.close()
            return seen

        seen = asyncio.run(watch())
    assert seen == getattr(tape, ids)[: len(seen)].tolist()
