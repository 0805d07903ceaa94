"""The bot admin validates with THE bot config validator, saves through the services, and never edits lifecycle."""

from __future__ import annotations

import json

import pytest

from apps.bots import services
from apps.bots.models import Bot
from apps.market.models import Market

pytestmark = pytest.mark.django_db

FORM = {"name": "admin-bot", "strategy": "sma_cross", "parameters": json.dumps({"fast": 5}), "exchange": "binance",
        "symbol": "BTC/USDT", "timeframe": "5m", "initial_balance": "500", "fee_rate": "0.001", "fraction": "1",
        "slippage": "0", "stop_loss": "", "take_profit": ""}


@pytest.mark.parametrize(("change", "field"), [
    ({"strategy": "does_not_exist"}, "strategy"),
    ({"stop_loss": "2"}, "stop_loss"),
    ({"parameters": json.dumps({"fast": 1e30})}, "parameters"),
    ({"parameters": json.dumps([1, 2])}, "parameters"),
    ({"fee_rate": "5"}, "fee_rate"),
])
def test_given_an_invalid_config_when_the_admin_add_form_is_posted_then_it_is_not_saved(admin_client, change,
                                                                                          field):
    resp = admin_client.post("/admin/bots/bot/add/", {**FORM, **change})

    assert resp.status_code == 200  # the form again, with the error
    assert field in resp.context["adminform"].form.errors
    assert not Bot.objects.exists()


def test_given_a_valid_config_when_the_admin_add_form_is_posted_then_bot_create_sets_the_portfolio(admin_client):
    resp = admin_client.post("/admin/bots/bot/add/", {**FORM, "status": "running", "cash": "99999"})

    assert resp.status_code == 302, resp.context["adminform"].form.errors if resp.context else resp
    bot = Bot.objects.get(name="admin-bot")
    assert (bot.status, bot.cash, bot.peak_equity) == (Bot.Status.STOPPED, 500, 500)
    assert bot.parameters == {"fast": 5, "slow": 50}


def test_given_a_bot_when_its_change_form_is_posted_then_config_changes_and_status_cannot(admin_client):
    bot = services.bot_create(data={"name": "admin-bot", "strategy": "sma_cross", "exchange": "binance",
                                    "symbol": "BTC/USDT", "timeframe": "5m"})
    form = admin_client.get(f"/admin/bots/bot/{bot.pk}/change/").context["adminform"].form
    assert "status" not in form.fields and "cash" not in form.fields

    resp = admin_client.post(f"/admin/bots/bot/{bot.pk}/change/", {**FORM, "stop_loss": "0.05",
                                                                   "status": "running"})

    assert resp.status_code == 302
    bot.refresh_from_db()
    assert bot.stop_loss == 0.05 and bot.status == Bot.Status.STOPPED


def test_given_bots_when_the_start_and_stop_actions_run_then_the_services_change_status_and_watch_the_market(
    admin_client,
):
    bot = services.bot_create(data={"name": "admin-bot", "strategy": "sma_cross", "exchange": "binance",
                                    "symbol": "BTC/USDT", "timeframe": "5m"})

    admin_client.post("/admin/bots/bot/", {"action": "start_bots", "_selected_action": [bot.pk]})
    bot.refresh_from_db()
    assert bot.status == Bot.Status.RUNNING
    assert Market.objects.get(exchange="binance", symbol="BTC/USDT", timeframe="5m").watched

    admin_client.post("/admin/bots/bot/", {"action": "stop_bots", "_selected_action": [bot.pk]})
    bot.refresh_from_db()
    assert bot.status == Bot.Status.STOPPED
