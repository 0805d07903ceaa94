"""Bot lifecycle services: bot_create / bot_update / bot_delete / bot_start / bot_stop (THE validator, on commit)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.bots import services
from apps.bots.config import BotConfigError
from apps.bots.models import Bot, Trade
from apps.market.models import Market

pytestmark = pytest.mark.django_db

CONFIG = {"name": "life", "strategy": "sma_cross", "parameters": {"fast": 5}, "exchange": "binance",
          "symbol": "BTC/USDT", "timeframe": "5m"}


def test_given_initial_balance_500_when_creating_then_cash_and_peak_equity_are_500():
    bot = services.bot_create(data={**CONFIG, "initial_balance": 500})

    bot.refresh_from_db()
    assert (bot.initial_balance, bot.cash, bot.peak_equity) == (500, 500, 500)


def test_given_initial_balance_500_when_posting_to_the_api_then_cash_is_500(django_user_model):
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_user("u", password="x" * 12, is_staff=True))

    resp = api.post("/api/v1/bots/", {**CONFIG, "initial_balance": 500}, format="json")

    assert resp.status_code == 201, resp.content
    assert resp.json()["cash"] == 500
    assert Bot.objects.get(name="life").peak_equity == 500


def test_given_no_fee_rate_when_creating_then_the_settings_default_fee_is_used(settings):
    settings.TRADEBOT_DEFAULT_FEE = 0.00075
    assert services.bot_create(data=CONFIG).fee_rate == 0.00075


@pytest.mark.parametrize(("change", "field"), [({"stop_loss": 2}, "stop_loss"), ({"slippage": -1}, "slippage"),
                                              ({"parameters": {"fast": 1e30}}, "parameters.fast")])
def test_given_a_value_that_would_fail_every_tick_when_creating_then_refused_naming_the_field(change, field):
    with pytest.raises(BotConfigError) as err:
        services.bot_create(data={**CONFIG, **change})
    assert err.value.field == field
    assert not Bot.objects.exists()


def test_given_a_trading_bot_when_its_config_changes_then_the_portfolio_is_kept():
    bot = services.bot_create(data=CONFIG)
    Bot.objects.filter(pk=bot.pk).update(cash=123.0, position=0.5, last_candle_timestamp=1_700_000_000_000)

    updated = services.bot_update(bot=bot, data={"initial_balance": 900, "parameters": {"fast": 7}})

    assert (updated.cash, updated.position, updated.initial_balance) == (123.0, 0.5, 900)
    assert updated.parameters == {"fast": 7, "slow": 50}


def test_given_a_bot_that_never_traded_when_its_initial_balance_changes_then_cash_follows():
    bot = services.bot_create(data=CONFIG)
    updated = services.bot_update(bot=bot, data={"initial_balance": 2500})
    assert (updated.cash, updated.peak_equity) == (2500, 2500)


def test_given_lifecycle_fields_when_updating_then_refused_naming_the_field():
    bot = services.bot_create(data=CONFIG)
    for name in ("status", "cash", "position", "peak_equity", "last_error", "restart_count"):
        with pytest.raises(Exception) as err:
            services.bot_update(bot=bot, data={name: 1})
        assert getattr(err.value, "field", None) == name


def test_given_a_bot_when_started_and_stopped_then_status_and_market_follow_and_events_publish_on_commit(
    django_capture_on_commit_callbacks,
):
    bot = services.bot_create(data=CONFIG)

    with django_capture_on_commit_callbacks() as started:
        services.bot_start(bot=bot)
    bot.refresh_from_db()
    assert bot.status == Bot.Status.RUNNING
    market = Market.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="5m")
    assert market.watched and market.provider == "ccxt"
    assert started  # the status event waits for the commit

    services.bot_stop(bot=bot)
    bot.refresh_from_db()
    assert bot.status == Bot.Status.STOPPED
    assert Market.objects.get(pk=market.pk).watched  # other bots may still use it


def test_given_a_bot_with_trades_when_deleted_then_everything_of_it_is_gone():
    bot = services.bot_create(data=CONFIG)
    Trade.objects.create(bot=bot, timestamp=1, side="buy", price=1.0, amount=1.0, fee=0.0, cash_after=0.0,
                         position_after=1.0)

    services.bot_delete(bot=bot)

    assert not Bot.objects.exists() and not Trade.objects.exists()


def test_given_a_config_file_when_synced_then_bots_come_from_bot_create_and_keep_state_on_resync(tmp_path):
    (tmp_path / "a.json").write_text('{"name": "a", "strategy": "rsi", "exchange": "binance", "symbol": "ETH/USDT",'
                                     ' "timeframe": "5m", "initial_balance": 700}')
    [bot] = services.sync_bots_from_configs(tmp_path)
    assert (bot.cash, bot.config_file) == (700, "a.json")
    Bot.objects.filter(pk=bot.pk).update(cash=650.0, last_candle_timestamp=1)

    (tmp_path / "a.json").write_text('{"name": "a", "strategy": "rsi", "exchange": "binance", "symbol": "ETH/USDT",'
                                     ' "timeframe": "5m", "initial_balance": 700, "stop_loss": 0.05}')
    [bot] = services.sync_bots_from_configs(tmp_path)
    assert (bot.cash, bot.stop_loss) == (650.0, 0.05)
