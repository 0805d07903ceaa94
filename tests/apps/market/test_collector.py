"""Incremental collection: fake Binance (real 2023 data through ccxt) -> ingest -> publish on a REAL Redis channel."""

from __future__ import annotations

import io
import time

import orjson
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.bots.models import Bot
from apps.market.collector import backfill, collect_all, collect_market, watched_markets
from apps.market.models import Candle, Market
from apps.market.providers.ccxt import CcxtProvider
from apps.market.providers.registry import register, unregister
from apps.market.selectors import candle_frame
from tests.apps.market.test_ccxt_provider import (
    DATA_FIRST_OPEN,
    MIN,
    FakeBinance,
    binance_client,
    expected_frame,
    fake_provider_factory,
)

pytestmark = pytest.mark.django_db

EXCHANGE = "h3collect"  # a name no other test publishes under (Redis channels are shared by all databases)
SEED_LAST_CLOSE = DATA_FIRST_OPEN + 300 * MIN


@pytest.fixture
def fake():
    fake = FakeBinance(now=SEED_LAST_CLOSE + 30_000)
    register("fakebinance", fake_provider_factory(fake, sleep=lambda s: None))
    yield fake
    unregister("fakebinance")


@pytest.fixture
def market(fake) -> Market:
    """A watched market whose history up to SEED_LAST_CLOSE is stored."""
    provider = CcxtProvider("binance", client=binance_client(fake), clock=lambda: fake.now)
    backfill(EXCHANGE, "BTC/USDT", "1m", DATA_FIRST_OPEN + MIN, SEED_LAST_CLOSE, provider=provider, progress=False)
    market = Market.objects.get(exchange=EXCHANGE)
    market.provider, market.watched = "fakebinance", True
    market.save()
    return market


def read_messages(pubsub, wanted: int, exchange: str, deadline_s: float = 10.0) -> list[dict]:
    """Messages of `exchange` received on the subscription, until `wanted` arrived (bounded wait, not a timing test)."""
    got: list[dict] = []
    end = time.monotonic() + deadline_s
    while len(got) < wanted and time.monotonic() < end:
        msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg and msg["type"] == "message":
            payload = orjson.loads(msg["data"])
            if payload.get("exchange") == exchange:
                got.append(payload)
    return got


def test_given_five_new_closed_minutes_when_collecting_then_stored_and_published_to_a_redis_subscriber(
    fake, market, redis_client, django_capture_on_commit_callbacks
):
    fake.now = SEED_LAST_CLOSE + 5 * MIN + 30_000  # five more candles closed, the sixth is forming
    pubsub = redis_client.pubsub()
    pubsub.subscribe("market:BTC/USDT")
    pubsub.get_message(timeout=2)  # the subscribe confirmation

    with django_capture_on_commit_callbacks(execute=True):
        result = collect_market(market.pk)

    new = [SEED_LAST_CLOSE + i * MIN for i in range(1, 6)]
    assert result.new_timestamps == new and result.rejected == []
    messages = read_messages(pubsub, 5, EXCHANGE)
    pubsub.close()
    expected = expected_frame(new[0], new[-1])
    assert [m["timestamp"] for m in messages] == new
    assert [m["close"] for m in messages] == expected["close"].tolist()
    assert [m["volume"] for m in messages] == expected["volume"].tolist()
    assert {(m["symbol"], m["timeframe"]) for m in messages} == {("BTC/USDT", "1m")}
    market.refresh_from_db()
    assert market.last_collected_at is not None and market.last_error == ""


def test_given_nothing_new_closed_when_collecting_then_no_request_and_nothing_stored(fake, market):
    calls = fake.kline_calls

    result = collect_market(market.pk)

    assert (result.received, result.new_timestamps) == (0, [])
    assert fake.kline_calls == calls  # the next candle is still forming: no need to ask the exchange


def test_given_an_empty_market_when_collecting_then_the_latest_closed_page_is_stored_without_the_forming_candle(fake):
    fake.now = DATA_FIRST_OPEN + 2000 * MIN + 10_000
    market = Market.objects.create(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m", provider="fakebinance")

    result = collect_market(market.pk)

    stored = candle_frame(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m")
    assert len(stored) == 999  # Binance's latest 1,000 klines minus the one still forming
    assert stored["timestamp"].iat[-1] == DATA_FIRST_OPEN + 2000 * MIN
    pd.testing.assert_frame_equal(stored, expected_frame(stored["timestamp"].iat[0], stored["timestamp"].iat[-1]))
    assert len(result.new_timestamps) == 999


def test_given_an_exchange_error_when_collecting_then_recorded_on_the_market_and_cleared_by_the_next_success(
    fake, market
):
    fake.now += 3 * MIN
    fake.fail_from = 1

    with pytest.raises(Exception, match="interrupted"):
        collect_market(market.pk)
    market.refresh_from_db()
    assert market.last_error.startswith("ExchangeError:")

    fake.fail_from = None
    result = collect_market(market.pk)

    market.refresh_from_db()
    assert len(result.new_timestamps) == 3 and market.last_error == ""


def test_given_a_started_bot_when_listing_watched_then_its_market_is_watched_and_a_stopped_bots_is_not(market):
    from apps.bots import services as bot_services
    from apps.market.services import market_create

    market_create(exchange=EXCHANGE, symbol="ETH/USDT", timeframe="5m", provider="fakebinance")
    running = bot_services.bot_create(data={"name": "h3-running", "strategy": "sma_cross", "exchange": EXCHANGE,
                                            "symbol": "ETH/USDT", "timeframe": "5m"})
    bot_services.bot_create(data={"name": "h3-stopped", "strategy": "sma_cross", "exchange": EXCHANGE,
                                  "symbol": "XRP/USDT", "timeframe": "5m"})
    Market.objects.create(exchange=EXCHANGE, symbol="LTC/USDT", timeframe="1h")  # not watched, no bot

    bot_services.bot_start(bot=running)
    labels = [str(m) for m in watched_markets()]

    assert labels == [f"{EXCHANGE} BTC/USDT 1m", f"{EXCHANGE} ETH/USDT 5m"]
    assert Market.objects.filter(symbol="XRP/USDT").count() == 0


def test_given_a_bot_on_a_market_no_provider_serves_when_started_then_refused_naming_the_exchange(market):
    from apps.bots import services as bot_services
    from apps.common.errors import ApplicationError

    bot = bot_services.bot_create(data={"name": "h3-nowhere", "strategy": "sma_cross", "exchange": "nosuchexchange",
                                        "symbol": "ETH/USDT", "timeframe": "5m"})

    with pytest.raises(ApplicationError) as err:
        bot_services.bot_start(bot=bot)

    assert err.value.field == "exchange" and "nosuchexchange" in err.value.message
    bot.refresh_from_db()
    assert bot.status == Bot.Status.STOPPED
    assert not Market.objects.filter(exchange="nosuchexchange").exists()


def test_given_one_failing_market_when_collecting_all_then_the_others_are_still_collected(fake, market):
    broken = Market.objects.create(exchange="nosuchexchange", symbol="BTC/USDT", timeframe="1m", watched=True)
    fake.now += 2 * MIN

    results = collect_all()

    assert results[str(market)]["new"] == 2
    assert "unknown ccxt exchange id 'nosuchexchange'" in results[str(broken)]["error"]
    broken.refresh_from_db()
    assert "nosuchexchange" in broken.last_error
    assert Candle.objects.filter(exchange=EXCHANGE).count() == 302


def test_given_watched_markets_when_running_the_collect_command_then_one_line_per_market_and_exit_1_on_failure(
    fake, market
):
    Market.objects.create(exchange="nosuchexchange", symbol="BTC/USDT", timeframe="1m", watched=True)
    fake.now += 4 * MIN
    out = io.StringIO()

    with pytest.raises(CommandError, match="1 of 2 markets failed: nosuchexchange BTC/USDT 1m") as err:
        call_command("collect", stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and err.value.returncode == 1
    assert lines[0].startswith(f"{EXCHANGE} BTC/USDT 1m: received 4, new 4, rejected 0, last ")
    assert lines[1].startswith("nosuchexchange BTC/USDT 1m: ERROR ProviderError: unknown ccxt exchange id")


def test_given_an_unknown_market_id_when_running_the_collect_command_then_exit_2(fake):
    with pytest.raises(CommandError, match="--market: no market with id 987654") as err:
        call_command("collect", "--market", "987654")

    assert err.value.returncode == 2
