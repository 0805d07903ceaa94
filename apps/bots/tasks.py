"""Thin tasks: ids/keys in, a service call. One task ticks every running bot of a market (batching, see design)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from apps.bots import services


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3, ignore_result=True)
def tick_market_task(exchange: str, symbol: str, timeframe: str, until: int | None = None) -> int:
    return sum(r.decided for r in services.tick_market(exchange, symbol, timeframe, until=until))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def tick_bot_task(bot_id: int) -> int:
    return services.tick_bot(bot_id).decided
