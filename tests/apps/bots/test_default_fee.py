"""settings.TRADEBOT_DEFAULT_FEE is the fee of a new bot (model row, JSON config) and of a new backtest job."""

import pytest

from apps.backtest.models import BacktestRun
from apps.bots.config import parse_config
from apps.bots.models import Bot

CONFIG = {"name": "fee-bot", "strategy": "sma_cross", "parameters": {"fast": 5, "slow": 20}, "exchange": "binance",
          "symbol": "BTC/USDT", "timeframe": "1h"}


@pytest.mark.django_db
def test_given_a_default_fee_setting_when_a_bot_is_created_without_fee_then_it_gets_the_setting(settings):
    settings.TRADEBOT_DEFAULT_FEE = 0.00075

    bot = Bot.objects.create(name="fee-bot", strategy="sma_cross", exchange="binance", symbol="BTC/USDT",
                             timeframe="1h")

    bot.refresh_from_db()
    assert bot.fee_rate == 0.00075


def test_given_a_default_fee_setting_when_a_config_has_no_fee_then_it_gets_the_setting(settings):
    settings.TRADEBOT_DEFAULT_FEE = 0.0002

    assert parse_config(CONFIG).fee_rate == 0.0002
    assert parse_config({**CONFIG, "fee_rate": 0.003}).fee_rate == 0.003  # an explicit fee wins


@pytest.mark.django_db
def test_given_a_default_fee_setting_when_a_backtest_run_is_stored_without_fee_then_it_gets_the_setting(settings):
    settings.TRADEBOT_DEFAULT_FEE = 0.0004

    run = BacktestRun.objects.create(strategy="sma_cross", exchange="binance", symbol="BTC/USDT", timeframe="1h")

    run.refresh_from_db()
    assert run.fee == 0.0004
