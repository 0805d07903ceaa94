"""Celery tasks of the market app: thin (ids in, a collector/service call, a JSON-able summary out).

Collection runs on its own `collect` queue, one in flight per market (Redis lock), and a failing market backs off
(Market.failures / retry_after, root cause in last_error) instead of retrying inside Celery. Backfill (resumable)
keeps a bounded Celery retry on ccxt.NetworkError.
"""

from __future__ import annotations

import logging
from typing import Any

import ccxt
from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

RETRY = {  # backfill: resumable, so a bounded Celery retry continues it
    "acks_late": True,
    "autoretry_for": (ccxt.NetworkError, OperationalError, InterfaceError),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


COLLECT_LOCK_S = 300  # a collection that takes longer than this no longer blocks the next one


@shared_task(bind=True, acks_late=True, max_retries=3)
def collect_market_task(self, market_id: int) -> dict[str, Any]:
    """Collect one market now (new closed candles are published after commit). One collection in flight per market
    (a Redis lock with expiry: a round that finds it held is skipped, in one log line). A failure is recorded on the
    market (root cause, backoff) and returned, not raised: no retry storm, no traceback per round."""
    import redis

    from apps.market import collector
    from apps.market.models import Market

    market = Market.objects.filter(pk=market_id).first()
    if market is None:
        return {"market_id": market_id, "error": "no such market"}
    lock = None
    if settings.REDIS_URL:
        lock = redis.Redis.from_url(settings.REDIS_URL).lock(f"tradebot:collect:{market_id}", timeout=COLLECT_LOCK_S,
                                                             blocking=False)
        if not lock.acquire(blocking=False):
            logger.info("collect %s: skipped, a collection of it is still in flight", market)
            return {"market_id": market_id, "skipped": True}
    try:
        result = collector.collect_market(market_id)
    except (OperationalError, InterfaceError) as exc:
        code = getattr(exc.__cause__, "sqlstate", None) or getattr(exc.__cause__, "pgcode", None)
        if code and not code.startswith(("08", "40", "57P0")):
            # The database refused the statement (disk full, statement timeout): recorded on the market with its
            # backoff by collect_market; retrying now would only repeat it.
            market.refresh_from_db()
            return collector.market_summary(market, None, market.last_error)
        # The database connection was lost mid-round (its transaction rolled back): retry on a fresh connection
        # instead of backing the market off for a fault that is not the exchange's.
        connection.close()
        raise self.retry(exc=exc, countdown=1)
    except Exception:  # noqa: BLE001 - recorded on the market by collect_market (root cause + backoff)
        market.refresh_from_db()
        return collector.market_summary(market, None, market.last_error)
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - expired meanwhile
                pass
    return collector.market_summary(market, result)


@shared_task(acks_late=True)
def collect_watched_task() -> list[int]:
    """Beat entry point: fan out one collect_market_task per watched poll market that is not backing off."""
    from apps.market import collector

    due, waiting = collector.due_markets()
    if waiting:
        logger.info("collect round: %d market(s) backing off after failures: %s", len(waiting),
                    ", ".join(f"{m} (until {m.retry_after:%H:%M:%S}, {m.last_error})" for m in waiting))
    ids = [m.pk for m in due]
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
def rollup_task(exchange: str, symbol: str, timeframe: str, start: int | None = None) -> dict[str, Any]:
    """Live rollup: build the newly complete `timeframe` candles from stored 1m candles (published like any new one).
    `start` (a bucket close time): rebuild from there, for 1m candles corrected after their bucket was built."""
    from apps.market.services import resample_stored

    result = resample_stored(exchange=exchange, symbol=symbol, source_tf="1m", target_tf=timeframe, start=start,
                             publish=True)
    return {"new": len(result.new_timestamps), "updated": result.updated}
