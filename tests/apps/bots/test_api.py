import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.bots.models import Bot

pytestmark = pytest.mark.django_db

BODY = {"name": "api-bot", "strategy": "sma_cross", "parameters": {"fast": 5}, "exchange": "binance",
        "symbol": "BTC/USDT", "timeframe": "5m"}


@pytest.fixture
def client():
    api = APIClient()
    api.force_authenticate(User.objects.create_user("bob", password="pw-123456789", is_staff=True))
    return api


def test_given_valid_body_when_creating_a_bot_then_parameters_get_defaults_and_it_can_start_and_stop(client):
    resp = client.post("/api/v1/bots/", BODY, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["parameters"] == {"fast": 5, "slow": 50}
    bot_id = resp.json()["id"]

    assert client.post(f"/api/v1/bots/{bot_id}/start/").json()["status"] == "running"
    assert Bot.objects.get(pk=bot_id).status == Bot.Status.RUNNING
    assert client.post(f"/api/v1/bots/{bot_id}/stop/").json()["status"] == "stopped"
    assert client.get(f"/api/v1/bots/{bot_id}/signals/").json()["count"] == 0


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"strategy": "nope"}, "strategy", "unknown strategy 'nope'"),
        ({"parameters": {"fast": 60}}, "parameters.fast", "'fast'"),
        ({"timeframe": "3m"}, "timeframe", "3m"),
    ],
)
def test_given_bad_body_when_creating_a_bot_then_400_names_the_field(client, change, field, text):
    resp = client.post("/api/v1/bots/", {**BODY, **change}, format="json")
    assert resp.status_code == 400
    assert resp.json()["field"] == field
    assert text in resp.json()["detail"]


def test_given_anonymous_user_when_creating_a_bot_then_refused():
    assert APIClient().post("/api/v1/bots/", BODY, format="json").status_code in (401, 403)


def test_given_a_bot_when_its_get_body_is_put_back_with_a_change_then_only_the_config_changes(client):
    bot = client.post("/api/v1/bots/", BODY, format="json").json()

    resp = client.put(f"/api/v1/bots/{bot['id']}/", {**bot, "stop_loss": 0.05}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["stop_loss"] == 0.05

    resp = client.put(f"/api/v1/bots/{bot['id']}/", {**bot, "status": "running"}, format="json")
    assert resp.status_code == 400 and resp.json()["field"] == "status"
    assert Bot.objects.get(pk=bot["id"]).status == Bot.Status.STOPPED


def test_given_a_replayed_bot_when_paging_its_trades_then_the_pages_are_what_the_model_serializer_writes(client):
    """The database writes the list's JSON: walked page by page it must be TradeSerializer's output, newest first."""
    from apps.bots import services
    from apps.bots.api.serializers import TradeSerializer
    from tests.factories import BotFactory, store_sample_candles

    df = store_sample_candles(timeframe="1h", nrows=600)
    bot = BotFactory(parameters={"fast": 5, "slow": 20}, timeframe="1h", stop_loss=0.01)
    services.replay_bot(bot, start=int(df["timestamp"].iloc[0]))
    expected = TradeSerializer(bot.trades.order_by("-timestamp", "-id"), many=True).data
    assert len(expected) > 14 and {t["reason"] for t in expected} >= {"signal", "stop_loss"}

    url, seen = f"/api/v1/bots/{bot.pk}/trades/?limit=7", []
    while url:
        page = client.get(url).json()
        assert page["count"] == len(expected) and len(page["results"]) <= 7
        seen += page["results"]
        url = page["next"]
    assert seen == expected
    past_the_end = client.get(f"/api/v1/bots/{bot.pk}/trades/?offset={len(expected)}").json()
    assert past_the_end["results"] == [] and past_the_end["count"] == len(expected)
    assert client.get(f"/api/v1/bots/{bot.pk + 1}/trades/").status_code == 404
