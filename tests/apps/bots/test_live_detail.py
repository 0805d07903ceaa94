"""A live bot on a market whose stream stores raw trades resolves ambiguous stop-loss/take-profit candles on the
stored trades (the rule of `backtest --detail trades`), so reconcile still matches its backtest twin; without raw
trades it keeps the conservative candle rule."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command

from apps.bots import services
from apps.bots.models import Bot
from apps.bots.selectors import live_detail
from apps.bots.strategies.registry import create_strategy
from apps.bots.trading.candles import CandleArrays
from apps.bots.trading.fleet import twin_fills
from apps.market.csvio import read_candle_csv
from apps.market.models import Market
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles, ingest_trades

XRP = Path(__file__).resolve().parents[3] / "sample_data/freqtrade_xrp_eth"
MARKET = {"exchange": "binance", "symbol": "XRP/ETH", "timeframe": "5m"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def xrp():
    """Real Binance XRP/ETH raw trades (stored) and the 5m candles derived from them (not stored yet)."""
    trades = pd.read_csv(XRP / "binance_XRP_ETH-trades.csv.gz")
    trades = trades.rename(columns={"id": "trade_id"})[["timestamp", "price", "amount", "side", "trade_id"]]
    ingest_trades(exchange="binance", symbol="XRP/ETH", df=trades)
    return read_candle_csv(XRP / "freqtrade_XRP_ETH-5m_derived_from_trades.csv", timeframe="5m", time_label="open")


def run_live_bot(m5: pd.DataFrame, name: str) -> Bot:
    ingest_candles(**MARKET, df=m5.iloc[:30], publish=False)
    bot = Bot.objects.create(name=name, strategy="sma_cross", parameters={"fast": 3, "slow": 12}, stop_loss=0.002,
                             take_profit=0.002, **MARKET)
    services.start_bot(bot)
    for a in range(30, len(m5), 7):  # candles arrive in small batches, each publish ticks the bot
        ingest_candles(**MARKET, df=m5.iloc[a:a + 7], publish=True)
    bot.refresh_from_db()
    return bot


def twins(bot: Bot) -> tuple[list, list]:
    """(the bot's recorded fills, its backtest twin with trades detail, its twin on candles alone)."""
    candles = CandleArrays.from_frame(candle_frame(**MARKET, start=bot.history_start))
    strategy = create_strategy(bot.strategy, bot.parameters)
    first = int(bot.signals.order_by("timestamp").values_list("timestamp", flat=True).first())
    rules = services.rules_for(bot)
    detail = live_detail(**MARKET, candle_ts=candles.timestamp, rules=[rules])
    return (twin_fills(candles, strategy, rules, trading_from=first, detail=detail),
            twin_fills(candles, strategy, rules, trading_from=first))


def recorded(bot: Bot) -> list[tuple]:
    return list(bot.trades.order_by("timestamp", "side").values_list("timestamp", "side", "price"))


def test_given_a_market_storing_raw_trades_when_a_live_bot_trades_then_exits_follow_the_trades_and_reconcile_matches(
        xrp):
    Market.objects.update_or_create(exchange="binance", symbol="XRP/ETH", timeframe="1m",
                                    defaults={"mode": "stream", "store_raw_trades": True})
    bot = run_live_bot(xrp, "live-detail")

    with_detail, candle_only = twins(bot)
    mine = recorded(bot)
    assert len(mine) >= 6
    assert mine == [(f["timestamp"], f["side"], f["price"]) for f in with_detail]
    assert mine != [(f["timestamp"], f["side"], f["price"]) for f in candle_only]  # the trades decided some exit
    out = StringIO()
    call_command("reconcile", bot.name, "--json", stdout=out)
    assert json.loads(out.getvalue())["match"] is True


def test_given_a_market_without_raw_trades_when_a_live_bot_trades_then_the_conservative_rule_stays(xrp):
    bot = run_live_bot(xrp, "live-plain")

    _, candle_only = twins(bot)
    assert recorded(bot) == [(f["timestamp"], f["side"], f["price"]) for f in candle_only]
    assert live_detail(**MARKET, candle_ts=[], rules=[services.rules_for(bot)]) is None
