"""The factories build what the services would: validated rows, real sample candles."""

from __future__ import annotations

import pytest

from apps.backtest.models import Status
from apps.bots.models import Bot
from apps.common.errors import ApplicationError
from apps.market.models import Candle, Market
from tests.factories import BacktestRunFactory, BotFactory, MarketFactory, SweepFactory, store_sample_candles

pytestmark = pytest.mark.django_db


def test_given_a_bot_factory_when_creating_with_a_balance_then_the_service_set_the_portfolio():
    bot = BotFactory(initial_balance=750, status=Bot.Status.RUNNING)

    assert (bot.cash, bot.peak_equity, bot.status) == (750, 750, Bot.Status.RUNNING)
    assert Market.objects.get(exchange=bot.exchange, symbol=bot.symbol, timeframe=bot.timeframe).watched


def test_given_an_invalid_bot_when_the_factory_creates_it_then_the_validator_refuses():
    with pytest.raises(ApplicationError) as err:
        BotFactory(stop_loss=2)
    assert err.value.field == "stop_loss"


def test_given_the_sample_when_stored_then_real_close_labelled_candles_and_runs_and_sweeps_build_on_them():
    df = store_sample_candles(timeframe="1h", nrows=48)
    assert Candle.objects.filter(timeframe="1h").count() == 48
    assert int(df["timestamp"].iloc[0]) % 3_600_000 == 0

    run = BacktestRunFactory(start=int(df["timestamp"].iloc[0]), end=int(df["timestamp"].iloc[-1]))
    sweep = SweepFactory()

    assert run.status == Status.PENDING and run.parameters == {"fast": 10, "slow": 40}
    assert sweep.total == 4 and sweep.status == Status.PENDING
    assert MarketFactory(timeframe="1h").pk == Market.objects.get(timeframe="1h").pk
