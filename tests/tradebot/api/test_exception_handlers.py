"""Every write endpoint answers bad input with a 400 `{"detail", "field"}` naming the field — never a 500.

Each case is one the API probe found reaching a 500 or stored and failing later (issue 9)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.test import APIClient

from apps.backtest.models import BacktestRun, Sweep
from apps.bots.models import Bot
from apps.common.errors import ApplicationError
from apps.market.models import Market
from tradebot.api.exception_handlers import exception_handler_with_fields

pytestmark = pytest.mark.django_db

BOT = {"name": "probe", "strategy": "sma_cross", "parameters": {"fast": 5}, "exchange": "binance",
       "symbol": "BTC/USDT", "timeframe": "5m"}
RUN = {"strategy": "sma_cross", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "15m"}
SWEEP = {**RUN, "grid": {"fast": [5, 10], "slow": [40]}}

BAD_BOTS = [
    ({"parameters": [1, 2]}, "parameters"),
    ({"parameters": {"fast": 1e30}}, "parameters.fast"),
    ({"parameters": {"fast": "ten"}}, "parameters.fast"),
    ({"parameters": {"nope": 1}}, "parameters.nope"),
    ({"fraction": 2}, "fraction"),
    ({"fee_rate": 5}, "fee_rate"),
    ({"initial_balance": -5}, "initial_balance"),
    ({"stop_loss": 2}, "stop_loss"),
    ({"slippage": -1}, "slippage"),
    ({"take_profit": -0.1}, "take_profit"),
    ({"strategy": "does_not_exist"}, "strategy"),
    ({"timeframe": "3m"}, "timeframe"),
    ({"symbol": "BTCUSDT"}, "symbol"),
    ({"name": ""}, "name"),
    ({"status": "running"}, "status"),
    ({"cash": 1e9}, "cash"),
]


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("prober", password="x" * 12, is_staff=True))
    return client


def assert_400(resp, field: str) -> dict:
    assert resp.status_code == 400, (resp.status_code, resp.content)
    body = resp.json()
    assert body["field"] == field, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize(("change", "field"), BAD_BOTS)
def test_given_a_bad_bot_body_when_creating_then_400_names_the_field_and_nothing_is_stored(api, change, field):
    assert_400(api.post("/api/v1/bots/", {**BOT, **change}, format="json"), field)
    assert not Bot.objects.exists()


@pytest.mark.parametrize(("change", "field"), BAD_BOTS)
def test_given_a_bad_bot_change_when_patching_then_400_names_the_field_and_the_bot_is_unchanged(api, change, field):
    created = api.post("/api/v1/bots/", BOT, format="json")
    assert created.status_code == 201, created.content
    before = created.json()

    assert_400(api.patch(f"/api/v1/bots/{before['id']}/", change, format="json"), field)

    assert api.get(f"/api/v1/bots/{before['id']}/").json() == before


def test_given_a_duplicate_bot_name_when_creating_then_400_names_the_name(api):
    assert api.post("/api/v1/bots/", BOT, format="json").status_code == 201
    assert_400(api.post("/api/v1/bots/", BOT, format="json"), "name")


def test_given_a_bot_on_a_market_with_an_unknown_provider_when_started_then_400_names_the_provider(api):
    Market.objects.create(exchange="binance", symbol="BTC/USDT", timeframe="5m", provider="nonexistent")
    bot = api.post("/api/v1/bots/", BOT, format="json").json()

    assert_400(api.post(f"/api/v1/bots/{bot['id']}/start/"), "provider")
    assert Bot.objects.get(pk=bot["id"]).status == Bot.Status.STOPPED


@pytest.mark.parametrize(("body", "field"), [
    ({"provider": "nonexistent"}, "provider"),
    ({"exchange": "nosuchexchange"}, "exchange"),
    ({"symbol": "BTCUSDT"}, "symbol"),
    ({"timeframe": "7m"}, "timeframe"),
])
def test_given_a_bad_market_when_creating_then_400_names_the_field(api, body, field):
    market = {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "5m", "watched": True}
    assert_400(api.post("/api/v1/market/markets/", {**market, **body}, format="json"), field)
    assert not Market.objects.exists()


def test_given_a_market_when_patching_an_unknown_provider_then_400_and_unchanged(api):
    market = api.post("/api/v1/market/markets/", {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "5m"},
                      format="json").json()
    assert_400(api.patch(f"/api/v1/market/markets/{market['id']}/", {"provider": "nonexistent"}, format="json"),
               "provider")
    assert Market.objects.get(pk=market["id"]).provider == "ccxt"


@pytest.mark.parametrize(("change", "field"), [
    ({"parameters": [1, 2]}, "parameters"),
    ({"parameters": {"fast": 1e30}}, "parameters.fast"),
    ({"strategy": "does_not_exist"}, "strategy"),
    ({"fee": 5}, "fee"),
    ({"fraction": 2}, "fraction"),
    ({"initial_balance": -5}, "initial_balance"),
    ({"stop_loss": 2}, "stop_loss"),
    ({"slippage": -1}, "slippage"),
    ({"start": 2_000_000, "end": 1_000_000}, "end"),
    ({"start": -1}, "start"),
    ({"timeframe": "2m"}, "timeframe"),
])
def test_given_a_bad_run_when_posting_then_400_names_the_field(api, change, field):
    assert_400(api.post("/api/v1/backtest/runs/", {**RUN, **change}, format="json"), field)
    assert not BacktestRun.objects.exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"seed": -1, "random": 3, "grid": None}, "seed"),
    ({"start": 2_000_000, "end": 1_000_000}, "end"),
    ({"metric": "bogus"}, "metric"),
    ({"grid": [1, 2]}, "grid"),
    ({"grid": {"fast": [1e30]}}, "grid"),
    ({"random": 3, "space": [1], "grid": None}, "space"),
    ({"strategy": "does_not_exist"}, "strategy"),
    ({"fee": 5}, "fee"),
    ({"timeframe": "2m"}, "timeframe"),
])
def test_given_a_bad_sweep_when_posting_then_400_names_the_field(api, change, field):
    body = {k: v for k, v in {**SWEEP, **change}.items() if v is not None}
    assert_400(api.post("/api/v1/backtest/sweeps/", body, format="json"), field)
    assert not Sweep.objects.exists()


def test_given_domain_and_django_validation_errors_when_handled_then_both_are_400_with_the_field():
    domain = exception_handler_with_fields(ApplicationError("fee too high", field="fee", extra={"max": 1}), {})
    assert domain.status_code == 400
    assert domain.data == {"detail": "fee too high", "field": "fee", "extra": {"max": 1}}

    django = exception_handler_with_fields(DjangoValidationError({"symbol": ["bad symbol"]}), {})
    assert django.status_code == 400
    assert django.data["field"] == "symbol" and "bad symbol" in django.data["detail"]


def test_given_an_unexpected_error_when_handled_then_it_is_not_turned_into_a_400():
    assert exception_handler_with_fields(RuntimeError("bug"), {}) is None
