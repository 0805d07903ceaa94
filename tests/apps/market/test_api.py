import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.market.models import Candle, Market

pytestmark = pytest.mark.django_db


@pytest.fixture
def candles(data_dir):
    import pandas as pd

    df = pd.read_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1h.csv", nrows=30)
    Candle.objects.bulk_create(
        Candle(exchange="binance", symbol="BTC/USDT", timeframe="1h", timestamp=int(r.timestamp) + 3_600_000,
               open=r.open, high=r.high, low=r.low, close=r.close, volume=r.volume)
        for r in df.itertuples()
    )
    return df


@pytest.fixture
def reader():
    client = APIClient()
    client.force_authenticate(User.objects.create_user("reader", password="pw-123456789"))
    return client


def test_given_stored_candles_when_listing_pages_then_cursor_walks_all_rows_in_order(candles, reader):
    client = reader
    url = "/api/v1/market/candles/?exchange=binance&symbol=BTC/USDT&timeframe=1h&limit=12"
    seen = []
    while url:
        resp = client.get(url)
        assert resp.status_code == 200
        body = resp.json()
        assert body["columns"] == ["timestamp", "open", "high", "low", "close", "volume"]
        seen.extend(body["rows"])
        url = body["next"]
    assert [r[0] for r in seen] == [int(t) + 3_600_000 for t in candles["timestamp"]]
    assert seen[0][1:] == [candles["open"][0], candles["high"][0], candles["low"][0], candles["close"][0],
                           candles["volume"][0]]


def test_given_bad_query_when_listing_candles_then_400_names_the_field(reader):
    resp = reader.get("/api/v1/market/candles/?exchange=binance&symbol=BTC/USDT&timeframe=7m")
    assert resp.status_code == 400
    assert resp.json()["field"] == "timeframe"


def test_given_staff_user_when_adding_market_then_it_is_watched():
    user = User.objects.create_user("alice", password="pw-123456789", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    resp = client.post("/api/v1/market/markets/", {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "5m",
                                                "watched": True}, format="json")
    assert resp.status_code == 201, resp.content
    assert Market.objects.get(symbol="ETH/USDT").watched is True
    dup = client.post("/api/v1/market/markets/", {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "5m"},
                      format="json")
    assert dup.status_code == 400


def test_given_schema_endpoint_when_fetched_then_candle_endpoint_is_documented(reader):
    resp = reader.get("/api/v1/schema/")
    assert resp.status_code == 200
    assert b"/api/v1/market/candles/" in resp.content


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["last_error", "last_collected_at", "created_at"])
def test_given_a_market_when_a_write_names_its_collection_state_then_400_naming_the_field_like_bots(field):
    """One guard (apps.common.state) for bots' lifecycle and markets' collection state: refused, never dropped."""
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from apps.market.models import Market

    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_user("state-staff", password="x" * 12, is_staff=True))
    market = Market.objects.create(exchange="binance", symbol="BTC/USDT", timeframe="1h", provider="replay")
    value = "2026-01-01T00:00:00Z" if field != "last_error" else "forged"
    resp = api.patch(f"/api/v1/market/markets/{market.pk}/", {field: value}, format="json")
    assert resp.status_code == 400 and resp.json()["field"] == field and "read-only state" in resp.json()["detail"]
    resp = api.post("/api/v1/market/markets/", {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1h",
                                                "provider": "replay", field: value}, format="json")
    assert resp.status_code == 400 and resp.json()["field"] == field
    unchanged = api.get(f"/api/v1/market/markets/{market.pk}/").json()
    assert api.put(f"/api/v1/market/markets/{market.pk}/", unchanged, format="json").status_code == 200
    market.refresh_from_db()
    assert market.last_error == "" and Market.objects.count() == 1
