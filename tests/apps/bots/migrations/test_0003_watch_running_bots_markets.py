"""Bots running before the collector stopped reading bots get their markets watched by the data migration."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("bots", "0002_bot_failed_at"), ("market", "0001_initial")]
AFTER = [("bots", "0003_watch_running_bots_markets")]


@pytest.mark.django_db(transaction=True)
def test_given_running_and_stopped_bots_when_migrating_then_only_running_bots_markets_are_watched():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    Bot, Market = apps.get_model("bots", "Bot"), apps.get_model("market", "Market")
    Market.objects.create(exchange="binance", symbol="BTC/USDT", timeframe="1h", watched=False, provider="ccxt")
    Bot.objects.create(name="r1", strategy="sma_cross", exchange="binance", symbol="BTC/USDT", timeframe="1h",
                       status="running")
    Bot.objects.create(name="r2", strategy="sma_cross", exchange="binance", symbol="ETH/USDT", timeframe="5m",
                       status="running")
    Bot.objects.create(name="s1", strategy="sma_cross", exchange="binance", symbol="XRP/USDT", timeframe="5m",
                       status="stopped")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from apps.market.models import Market as LiveMarket

    watched = sorted(LiveMarket.objects.filter(watched=True).values_list("symbol", "timeframe", "provider"))
    assert watched == [("BTC/USDT", "1h", "ccxt"), ("ETH/USDT", "5m", "ccxt")]
    assert not LiveMarket.objects.filter(symbol="XRP/USDT").exists()
