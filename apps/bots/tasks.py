"""Thin tasks: ids/keys in, a service call. One task ticks every running bot of a market (batching, see design)."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.db import OperationalError

from apps.bots import services
from apps.bots.models import Bot


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3, ignore_result=True)
def tick_market_task(exchange: str, symbol: str, timeframe: str, until: int | None = None) -> int:
    return sum(r.decided for r in services.tick_market(exchange, symbol, timeframe, until=until))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3)
def tick_bot_task(bot_id: int) -> int:
    try:
        report = services.tick_bot(bot_id)
    except OperationalError:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded on the bot for the monitor
        services.record_tick_error(bot_id, exc)
        return 0
    Bot.objects.filter(pk=bot_id, failed_at__isnull=False).update(failed_at=None)
    return report.decided


@shared_task(acks_late=True, ignore_result=True)
def monitor_bots_task() -> dict:
    report = services.monitor_bots()
    return {"restarted": report.restarted, "gave_up": report.gave_up}


@worker_ready.connect
def _resume_on_worker_start(sender=None, **kwargs) -> None:
    """Running bots resume from their last processed candle when a worker (re)starts."""
    services.resume_running_bots()
