"""Celery tasks of the market app: thin (ids in, a collector/service call, a JSON-able summary out).

Transient exchange failures (ccxt.NetworkError, incl. rate limits) are retried by Celery with exponential back-off
and a bounded number of retries, on top of the provider's own short in-request retries.
"""

from __future__ import annotations

from typing import Any

import ccxt
from celery import shared_task
from django.conf import settings

RETRY = {
    "acks_late": True,
    "autoretry_for": (ccxt.NetworkError,),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(**RETRY)
def collect_market_task(market_id: int) -> dict[str, Any]:
    """Collect one market now (new closed candles are published after commit)."""
    from apps.market import collector
    from apps.market.models import Market

    result = collector.collect_market(market_id)
    market = Market.objects.get(pk=market_id)
    return collector.market_summary(market, result)


@shared_task(acks_late=True)
def collect_watched_task() -> list[int]:
    """Beat entry point: fan out one collect_market_task per watched market (after this transaction commits)."""
    from apps.market import collector

    ids = [m.pk for m in collector.watched_markets()]
    for market_id in ids:
        collector.enqueue_collect(market_id)
    return ids


@shared_task(acks_late=True)
def create_partitions_task(months: int | None = None) -> list[str]:
    """Beat entry point (daily): create raw_trades month partitions ahead (PostgreSQL; no-op elsewhere)."""
    from apps.market.partitions import create_partitions_ahead

    return create_partitions_ahead(settings.TRADEBOT_RAW_TRADES_MONTHS_AHEAD if months is None else int(months))


@shared_task(**RETRY)
def backfill_task(
    exchange: str, symbol: str, timeframe: str, since: int, until: int | None = None, provider: str | None = None
) -> dict[str, Any]:
    """Backfill a range in a worker (resumable: a retry continues where the previous attempt stopped)."""
    from apps.market.collector import backfill

    return backfill(exchange, symbol, timeframe, since, until, provider=provider, progress=False).to_dict()


@shared_task(acks_late=True)
def rollup_task(exchange: str, symbol: str, timeframe: str) -> dict[str, Any]:
    """Live rollup: build the newly complete `timeframe` candles from stored 1m candles (published like any new one)."""
    from apps.market.services import resample_stored

    result = resample_stored(exchange=exchange, symbol=symbol, source_tf="1m", target_tf=timeframe, publish=True)
    return {"new": len(result.new_timestamps), "updated": result.updated}
