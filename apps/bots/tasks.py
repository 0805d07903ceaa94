"""Thin tasks: ids/keys in, a service call. A fleet tick is one task per shard of a market's running bots."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.db import OperationalError

from apps.bots import services


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3, ignore_result=True)
def tick_shard_task(bot_ids: list[int], until: int | None = None, wait: bool = False) -> int:
    return services.tick_shard(bot_ids, until=until, wait=wait).decided


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3, ignore_result=True)
def tick_market_task(exchange: str, symbol: str, timeframe: str, until: int | None = None) -> int:
    """Fan a market's tick out into shard tasks (kept for messages enqueued by older code)."""
    return len(services.enqueue_ticks([(exchange, symbol, timeframe)], until=until))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def tick_bot_task(bot_id: int) -> int:
    return services.tick_bot(bot_id).decided


@shared_task(acks_late=True)
def replay_bot_task(bot_id: int) -> dict:
    """Replay a bot over its stored candles from a fresh portfolio (admin action; thin: the service does it)."""
    from apps.bots.models import Bot

    report = services.replay_bot(Bot.objects.get(pk=bot_id))
    return {"bot_id": bot_id, "decided": report.decided, "fills": report.fills}


@shared_task(acks_late=True, ignore_result=True)
def monitor_bots_task() -> dict:
    report = services.monitor_bots()
    return {"restarted": report.restarted, "gave_up": report.gave_up}


@worker_ready.connect
def _on_worker_start(sender=None, **kwargs) -> None:
    """A worker (re)starting loads the bot config files, then running bots catch up from their last decided candle."""
    services.sync_bots_on_worker_start()
    services.resume_running_bots()
