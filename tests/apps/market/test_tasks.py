"""Market tasks, run through Celery (.delay, eager in tests): fan-out, retries on network errors, partitions."""

from __future__ import annotations

import ccxt
import pytest
from django.db import connection

from apps.market.models import Candle, Market
from apps.market.providers.registry import register, unregister
from apps.market.tasks import backfill_task, collect_market_task, collect_watched_task, create_partitions_task
from tests.apps.market.test_ccxt_provider import DATA_FIRST_OPEN, MIN, FakeBinance, fake_provider_factory

pytestmark = pytest.mark.django_db

EXCHANGE = "h3tasks"


@pytest.fixture
def fake():
    fake = FakeBinance(now=DATA_FIRST_OPEN + 50 * MIN + 5_000)
    register("fakebinance", fake_provider_factory(fake, sleep=lambda s: None, max_attempts=2))
    yield fake
    unregister("fakebinance")


@pytest.fixture
def _eager_retries():
    """Eager Celery runs a retry in-process only when eager errors do not propagate (else it raises Retry)."""
    conf = collect_market_task.app.conf
    before = conf.task_eager_propagates
    conf.task_eager_propagates = False
    yield
    conf.task_eager_propagates = before


def test_given_two_watched_markets_when_collect_watched_task_is_delayed_then_each_market_is_collected(
    fake, django_capture_on_commit_callbacks
):
    btc = Market.objects.create(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m", provider="fakebinance",
                                watched=True)
    other = Market.objects.create(exchange=f"{EXCHANGE}2", symbol="BTC/USDT", timeframe="1m",
                                  provider="fakebinance", watched=True)
    Market.objects.create(exchange=f"{EXCHANGE}3", symbol="BTC/USDT", timeframe="1m", provider="fakebinance")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        ids = collect_watched_task.delay().get()

    assert sorted(ids) == sorted([btc.pk, other.pk])
    assert len(callbacks) >= 2  # one enqueue per market, only after commit
    assert Candle.objects.filter(exchange=EXCHANGE).count() == 50
    assert Candle.objects.filter(exchange=f"{EXCHANGE}2").count() == 50
    assert Candle.objects.filter(exchange=f"{EXCHANGE}3").count() == 0


def test_given_network_errors_outlasting_the_provider_retries_when_the_task_runs_then_the_market_backs_off(fake):
    market = Market.objects.create(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m", provider="fakebinance",
                                   watched=True)
    fake.errors = {i: ccxt.ExchangeNotAvailable(f"503 #{i}") for i in range(1, 100)}

    summary = collect_market_task.delay(market.pk).get()  # recorded and returned: no retry storm, no traceback

    assert "ExchangeNotAvailable" in summary["error"]
    assert fake.kline_calls == 2  # the provider's own bounded attempts, once
    market.refresh_from_db()
    assert market.failures == 1 and market.retry_after is not None and "503" in market.last_error
    assert collect_watched_task.delay().get() == []  # the next round skips it while it backs off
    fake.errors = {}
    Market.objects.filter(pk=market.pk).update(retry_after=None)
    assert collect_market_task.delay(market.pk).get()["new"] == 50
    market.refresh_from_db()
    assert (market.failures, market.retry_after, market.last_error) == (0, None, "")


def test_given_a_collection_in_flight_when_another_round_comes_then_it_is_skipped(fake, redis_client):
    market = Market.objects.create(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m", provider="fakebinance")
    lock = redis_client.lock(f"tradebot:collect:{market.pk}", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert collect_market_task.delay(market.pk).get() == {"market_id": market.pk, "skipped": True}
    finally:
        lock.release()
    assert fake.kline_calls == 0


def test_given_dns_failure_wrapped_by_ccxt_when_recorded_then_the_root_cause_is_named():
    import socket

    from apps.market.collector import root_cause

    try:
        try:
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        except socket.gaierror as inner:
            raise ccxt.NetworkError("binance GET https://api.binance.com/api/v3/exchangeInfo") from inner
    except ccxt.NetworkError as exc:
        assert root_cause(exc) == "DNS resolution failed for api.binance.com"


def test_given_a_range_when_backfill_task_is_delayed_then_it_returns_the_report(fake):
    report = backfill_task.delay(EXCHANGE, "BTC/USDT", "1m", DATA_FIRST_OPEN + MIN, DATA_FIRST_OPEN + 40 * MIN,
                                 "fakebinance").get()

    assert (report["fetched"], report["stored"], report["outages"]) == (40, 40, 0)
    assert Candle.objects.filter(exchange=EXCHANGE).count() == 40


def test_given_postgresql_when_the_partition_task_runs_then_partitions_exist_and_a_rerun_creates_none():
    created = create_partitions_task.delay(2).get()
    again = create_partitions_task.delay(2).get()

    with connection.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'raw_trades'::regclass")
        existing = {r[0] for r in cur.fetchall()}
    assert set(created) <= existing
    assert len(existing) >= 3  # this month and two ahead
    assert again == []


def test_given_a_transaction_when_enqueueing_a_backfill_then_the_task_runs_only_after_commit(
    fake, django_capture_on_commit_callbacks
):
    from apps.market.collector import enqueue_backfill

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        enqueue_backfill(EXCHANGE, "BTC/USDT", "1m", DATA_FIRST_OPEN + MIN, DATA_FIRST_OPEN + 10 * MIN)
        assert Candle.objects.filter(exchange=EXCHANGE).count() == 0  # nothing enqueued inside the transaction

    assert len(callbacks) == 1 and Candle.objects.filter(exchange=EXCHANGE).count() == 0
    Market.objects.create(exchange=EXCHANGE, symbol="BTC/USDT", timeframe="1m", provider="fakebinance")
    callbacks[0]()  # the commit happens: the (eager) task runs with the market's provider

    assert Candle.objects.filter(exchange=EXCHANGE).count() == 10
