"""API v1: every finding of the probe (integrator and attacker) as a test."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from apps.backtest.models import Sweep
from apps.bots.models import Bot
from apps.market.models import Market
from tests.tradebot.api.conftest import client_from


def names(resp, field: str) -> bool:
    """The API's 400 body names the field: {"detail", "field", "errors"?} (tradebot.api.exception_handlers)."""
    named = resp.json().get("field") or ""
    return named == field or named.startswith(field + ".")

pytestmark = pytest.mark.django_db

BOT = {"name": "probe", "strategy": "sma_cross", "parameters": {"fast": 5, "slow": 50}, "exchange": "binance",
       "symbol": "BTC/USDT", "timeframe": "5m"}
SWEEP = {"strategy": "sma_cross", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h",
         "grid": {"fast": [5, 10], "slow": [50]}}
LISTS = ["/api/v1/bots/", "/api/v1/market/markets/", "/api/v1/market/gaps/", "/api/v1/backtest/runs/",
         "/api/v1/backtest/sweeps/", "/api/v1/backtest/walkforwards/"]


# --- authentication -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [*LISTS, "/api/v1/profit/", "/api/v1/performance/", "/api/v1/schema/",
                                  "/api/v1/market/candles/?exchange=binance&symbol=BTC/USDT&timeframe=1h"])
def test_given_anonymous_caller_when_reading_anything_then_401_with_www_authenticate(anon_api, path):
    resp = anon_api.get(path)
    assert resp.status_code == 401
    assert resp["WWW-Authenticate"] == "Token"
    assert "html" not in resp["Content-Type"]


def test_given_anonymous_caller_when_opening_the_docs_then_sent_to_the_login_page(anon_api):
    resp = anon_api.get("/api/v1/docs/")
    assert resp.status_code == 302 and resp["Location"].startswith("/accounts/login/")


def test_given_anonymous_caller_when_checking_health_then_ok_without_internals(anon_api):
    resp = anon_api.get("/api/v1/health/")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok" and resp.json()["database"] is True and resp.json()["redis"] is True
    assert "workers" not in resp.json()


def test_given_staff_caller_when_checking_health_then_workers_and_beat_are_reported(staff_api):
    body = staff_api.get("/api/v1/health/").json()
    assert {"workers", "beat_last_run"} <= set(body)


def test_given_a_password_when_posting_to_the_token_endpoint_then_the_users_token_authenticates(reader):
    user, key = reader
    resp = client_from().post("/api/v1/auth/token/", {"username": "reader", "password": "reader-pass-123"},
                              format="json")
    assert resp.status_code == 200 and resp.json()["token"] == key
    assert client_from(token=key).get("/api/v1/bots/").status_code == 200
    wrong = client_from().post("/api/v1/auth/token/", {"username": "reader", "password": "nope"}, format="json")
    assert wrong.status_code == 400 and "credentials" in wrong.json()["detail"]


def test_given_the_management_command_when_run_then_it_issues_a_working_token(reader, capsys):
    Token.objects.filter(user=reader[0]).delete()
    call_command("drf_create_token", "reader")
    key = Token.objects.get(user=reader[0]).key
    assert key in capsys.readouterr().out
    assert client_from(token=key).get("/api/v1/bots/").status_code == 200


def test_given_a_token_when_it_is_deleted_or_its_user_deactivated_then_the_next_request_is_refused(reader, staff):
    """One database read per request (no cached token): a revoked token or a deactivated user fails at once."""
    user, key = reader
    api = client_from(token=key)
    assert api.get("/api/v1/bots/").status_code == 200
    assert client_from(token=staff[1]).post("/api/v1/bots/", BOT, format="json").status_code == 201  # is_staff read
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert api.get("/api/v1/bots/").json()["detail"] == "User inactive or deleted."
    User.objects.filter(pk=user.pk).update(is_active=True)
    Token.objects.filter(key=key).delete()
    resp = api.get("/api/v1/bots/")
    assert resp.status_code == 401 and resp.json()["detail"] == "Invalid token." and resp["WWW-Authenticate"] == "Token"


# --- roles ----------------------------------------------------------------------------------------------------------

def test_given_a_non_staff_user_when_writing_then_403_and_nothing_changes(reader_api):
    bot = Bot.objects.create(**{**BOT, "name": "existing"})
    market = Market.objects.create(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    attempts = [
        reader_api.post("/api/v1/bots/", BOT, format="json"),
        reader_api.patch(f"/api/v1/bots/{bot.pk}/", {"fraction": 0.5}, format="json"),
        reader_api.post(f"/api/v1/bots/{bot.pk}/start/"),
        reader_api.post(f"/api/v1/bots/{bot.pk}/stop/"),
        reader_api.delete(f"/api/v1/bots/{bot.pk}/"),
        reader_api.post("/api/v1/market/markets/", {"exchange": "x", "symbol": "A/B", "timeframe": "1h"},
                        format="json"),
        reader_api.post(f"/api/v1/market/markets/{market.pk}/watch/"),
        reader_api.post("/api/v1/backtest/runs/", {**SWEEP, "grid": None}, format="json"),
        reader_api.post("/api/v1/backtest/sweeps/", SWEEP, format="json"),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    bot.refresh_from_db()
    assert (Bot.objects.count(), bot.status, bot.fraction) == (1, "stopped", 1.0)
    assert Market.objects.get().watched is False and Sweep.objects.count() == 0


def test_given_a_non_staff_user_when_reading_then_allowed(reader_api):
    for path in LISTS:
        assert reader_api.get(path).status_code == 200, path


# --- throttling -----------------------------------------------------------------------------------------------------

def test_given_quick_anonymous_requests_when_over_the_rate_then_429_with_retry_after(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "anon": "5/minute"}}
    client = client_from()
    codes = [client.get("/api/v1/bots/").status_code for _ in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3
    resp = client.get("/api/v1/health/")
    assert resp.status_code == 429 and int(resp["Retry-After"]) > 0


def test_given_many_wrong_passwords_when_over_the_login_rate_then_429_even_for_the_right_one(settings, reader):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "login": "3/minute"}}
    client = client_from()
    codes = [client.post("/api/v1/auth/token/", {"username": "reader", "password": f"guess{i}"},
                         format="json").status_code for i in range(3)]
    right = client.post("/api/v1/auth/token/", {"username": "reader", "password": "reader-pass-123"}, format="json")
    assert codes == [400] * 3 and right.status_code == 429 and int(right["Retry-After"]) > 0


def test_given_an_authenticated_user_when_over_the_user_rate_then_429(settings, reader_api):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "user": "4/minute"}}
    codes = [reader_api.get("/api/v1/bots/").status_code for _ in range(6)]
    assert codes == [200] * 4 + [429] * 2


def test_given_many_requests_when_throttled_then_the_counter_is_one_integer_not_a_history(reader, reader_api):
    """O(1) per request: DRF's history list (rewritten whole on every request) would hold every request's time."""
    import time

    from django.core.cache import cache

    from tradebot.api.throttling import UserThrottle

    key = UserThrottle.cache_format % {"scope": "user", "ident": reader[0].pk}
    cache.delete_many([key, f"{key}:t0"])  # counters live in Redis and outlive a test database
    for _ in range(30):
        assert reader_api.get("/api/v1/bots/").status_code == 200
    assert cache.get(key) == 30 and 0 < cache.get(f"{key}:t0") <= time.time()


# --- pagination -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("query", ["limit=9223372036854775808", "limit=0", "limit=1001", "limit=-1", "limit=abc",
                                   "offset=9223372036854775808", "offset=-1"])
def test_given_an_out_of_range_limit_or_offset_when_listing_then_400_naming_it(reader_api, path, query):
    resp = reader_api.get(f"{path}?{query}")
    assert resp.status_code == 400, resp.content
    assert names(resp, query.split("=")[0])


def test_given_many_rows_when_listing_with_the_maximum_limit_then_the_page_is_capped(reader_api):
    Bot.objects.bulk_create([Bot(**{**BOT, "name": f"b{i:04d}"}) for i in range(1005)])
    body = reader_api.get("/api/v1/bots/?limit=1000").json()
    assert body["count"] == 1005 and len(body["results"]) == 1000
    assert len(reader_api.get("/api/v1/bots/").json()["results"]) == 100


# --- bad input: 400 naming the field, never a 500, never stored -----------------------------------------------------

def test_given_a_non_numeric_sweep_filter_when_listing_runs_then_400_not_a_debug_page(anon_api, reader_api):
    resp = reader_api.get("/api/v1/backtest/runs/?sweep=abc")
    assert resp.status_code == 400 and names(resp, "sweep")
    assert anon_api.get("/api/v1/backtest/runs/?sweep=abc").status_code == 401


@pytest.mark.parametrize(("change", "field"), [
    ({"seed": -1, "grid": None, "random": 5}, "seed"),
    ({"start": 2_000, "end": 1_000}, "end"),
    ({"metric": "bogus"}, "metric"),
    ({"top_k": 10**9}, "top_k"),
    ({"grid": None, "random": 100_000, "chunk_size": 1}, "random"),
    ({"grid": None, "random": 10_000, "chunk_size": 1}, "chunk_size"),
    ({"grid": {"fast": list(range(2, 200)), "slow": list(range(200, 300))}}, "grid"),
])
def test_given_an_unbounded_or_bad_sweep_when_posting_then_400_naming_the_field_and_nothing_queued(
        staff_api, change, field):
    body = {k: v for k, v in {**SWEEP, **change}.items() if v is not None}
    resp = staff_api.post("/api/v1/backtest/sweeps/", body, format="json")
    assert resp.status_code == 400, resp.content
    assert names(resp, field), resp.json()
    assert Sweep.objects.count() == 0


def test_given_a_valid_sweep_when_posting_then_it_is_stored_pending_and_dispatched_by_a_task(
        staff_api, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from apps.backtest import tasks

    monkeypatch.setattr(tasks.dispatch_sweep_task, "delay", lambda sweep_id: sent.append(sweep_id))
    with django_capture_on_commit_callbacks(execute=True):
        resp = staff_api.post("/api/v1/backtest/sweeps/", SWEEP, format="json")
    assert resp.status_code == 202
    sweep = Sweep.objects.get()
    assert sent == [sweep.pk] and sweep.status == "pending" and sweep.total == 2
    assert resp["Location"].endswith(f"/api/v1/backtest/sweeps/{sweep.pk}/")


def test_given_an_unknown_provider_when_adding_a_market_then_400_naming_it(staff_api):
    resp = staff_api.post("/api/v1/market/markets/", {"exchange": "binance", "symbol": "BTC/USDT",
                                                      "timeframe": "1h", "provider": "nonexistent"}, format="json")
    assert resp.status_code == 400 and names(resp, "provider") and "nonexistent" in resp.json()["detail"]
    assert Market.objects.count() == 0


def test_given_a_market_when_watching_unwatching_and_reading_coverage_then_the_ledger_answers(staff_api):
    market = Market.objects.create(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    assert staff_api.post(f"/api/v1/market/markets/{market.pk}/watch/").json()["watched"] is True
    assert staff_api.post(f"/api/v1/market/markets/{market.pk}/unwatch/").json()["watched"] is False
    cov = staff_api.get(f"/api/v1/market/markets/{market.pk}/coverage/").json()
    assert cov["candles"] == 0 and cov["open_gaps"] == 0
    assert staff_api.get(f"/api/v1/market/markets/{market.pk}/gaps/").json()["count"] == 0
    bad = staff_api.post(f"/api/v1/market/markets/{market.pk}/backfill/", {"since": 5, "until": 1}, format="json")
    assert bad.status_code == 400 and names(bad, "until")


# --- docs offline, old paths -----------------------------------------------------------------------------------------

def test_given_a_logged_in_user_when_opening_swagger_and_redoc_then_assets_come_from_our_static_files(
        client, reader):
    client.force_login(reader[0])
    for path in ("/api/v1/docs/", "/api/v1/redoc/"):
        html = client.get(path).content.decode()
        assert "drf_spectacular_sidecar" in html, path
        for cdn in ("cdn.jsdelivr", "unpkg.com", "cdnjs", "googleapis"):
            assert cdn not in html, (path, cdn)
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("plotly/plotly.min.js")


def test_given_an_old_api_path_when_requested_then_308_to_the_v1_path(reader_api):
    resp = reader_api.get("/api/bots/?limit=5")
    assert resp.status_code == 308 and resp["Location"] == "/api/v1/bots/?limit=5"


def test_given_an_unknown_api_path_when_requested_then_a_json_404(reader_api, settings):
    settings.DEBUG = False
    resp = reader_api.get("/api/v1/nothing-here/")
    assert resp.status_code == 404 and resp["Content-Type"] == "application/json"
