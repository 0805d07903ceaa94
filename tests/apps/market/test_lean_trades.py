"""The lean Binance trade path equals ccxt.pro's own parsing, message for message, on the recorded real trades; every
other message shape still goes through ccxt.pro."""

from __future__ import annotations

import asyncio

import ccxt.pro as ccxtpro
import orjson
import pytest

from apps.market.providers.ccxt import make_pro_client
from apps.market.providers.lean_trades import LeanBinanceTrades, lean_client_class
from apps.market.testing.binance import FakeBinanceThread, load_tape

FIELDS = ("info", "timestamp", "symbol", "id", "side", "price", "amount")


@pytest.fixture(scope="module")
def fake():
    from tests.conftest import DATA_DIR

    tape = load_tape(DATA_DIR / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz", symbol="XRP/ETH")
    with FakeBinanceThread([tape], paused=True) as server:
        yield server, tape


def recorded_messages(fake, kind: str) -> list[str]:
    server, tape = fake
    return ['{"e":"' + kind + '","E":1700000000000,' + tail for tail in server.server.event_tails(tape, kind)]


def cached_trades(client, url: str, messages: list[str]) -> list[dict]:
    ws = client.client(url)
    for message in messages:
        client.handle_message(ws, orjson.loads(message))
    return list(client.trades.get("XRP/ETH", []))


async def both_clients(fake, settings):
    server, _ = fake
    settings.TRADEBOT_EXCHANGE_URLS = server.exchange_urls()
    lean = make_pro_client("binance", {"options": {"tradesLimit": 20_000}})
    stock = ccxtpro.binance({"options": {"tradesLimit": 20_000}})
    stock.urls = lean.urls
    await asyncio.gather(lean.load_markets(), stock.load_markets())
    return lean, stock


@pytest.mark.parametrize("kind", ["aggTrade", "trade"])
def test_given_recorded_trade_events_when_handled_then_lean_trades_equal_ccxt_pro_parsing(fake, settings, kind):
    async def main():
        lean, stock = await both_clients(fake, settings)
        try:
            url = lean.urls["api"]["ws"]["spot"] + f"/xrpeth@{kind}"
            messages = recorded_messages(fake, kind)
            return cached_trades(lean, url, messages), cached_trades(stock, url, messages), len(messages)
        finally:
            await asyncio.gather(lean.close(), stock.close())

    lean_trades, stock_trades, n = asyncio.run(main())

    assert n > 10_000 and len(lean_trades) == len(stock_trades) == n
    assert not any("datetime" in t for t in lean_trades)  # the lean path built them, not ccxt.pro's parse_trade
    assert [{k: t[k] for k in FIELDS} for t in lean_trades] == [{k: t[k] for k in FIELDS} for t in stock_trades]
    assert {t["side"] for t in lean_trades} == {"buy", "sell"}


def test_given_a_trade_event_missing_a_field_when_handled_then_ccxt_pro_parses_it(fake, settings):
    async def main():
        lean, stock = await both_clients(fake, settings)
        try:
            trade = orjson.loads(recorded_messages(fake, "aggTrade")[0])
            del trade["m"]  # no maker flag: not the shape the lean path knows
            lean.handle_message(lean.client(lean.urls["api"]["ws"]["spot"] + "/xrpeth@aggTrade"), trade)
            return list(lean.trades.get("XRP/ETH", []))
        finally:
            await asyncio.gather(lean.close(), stock.close())

    trades = asyncio.run(main())

    # ccxt.pro's own parse ran: it builds the fields the lean path leaves out, and no side without the flag
    assert len(trades) == 1 and "datetime" in trades[0] and trades[0]["side"] is None


def test_given_exchanges_when_client_class_is_made_then_only_binance_family_gets_the_lean_path():
    assert issubclass(lean_client_class("binance", ccxtpro.binance), LeanBinanceTrades)
    assert issubclass(lean_client_class("binanceus", ccxtpro.binanceus), ccxtpro.binanceus)
    assert lean_client_class("kraken", ccxtpro.kraken) is ccxtpro.kraken


def test_given_markets_not_loaded_when_a_trade_arrives_then_ccxt_pro_handles_it_and_nothing_is_cached(fake, settings):
    async def main():
        server, _ = fake
        settings.TRADEBOT_EXCHANGE_URLS = server.exchange_urls()
        lean = make_pro_client("binance", {"options": {"tradesLimit": 20_000}})
        try:
            ws = lean.client(lean.urls["api"]["ws"]["spot"] + "/xrpeth@aggTrade")
            first, second = (orjson.loads(m) for m in recorded_messages(fake, "aggTrade")[:2])
            lean.handle_message(ws, first)
            before = dict(lean._lean_symbols)
            await lean.load_markets()
            lean.handle_message(ws, second)
            return before, list(lean.trades.get("XRP/ETH", []))
        finally:
            await lean.close()

    cached_before_load, trades = asyncio.run(main())

    assert cached_before_load == {}  # no symbol resolved from an empty market table is kept
    assert len(trades) == 1 and "datetime" not in trades[0]  # once loaded, the lean path resolves XRP/ETH
