"""The Celery app: queues market / bots / backtest, late acks and prefetch 1 so a lost worker loses no task."""

import os

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.base")

app = Celery("tradebot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("market"), Queue("bots"), Queue("backtest")),
    task_default_queue="market",
    task_routes={
        "apps.market.tasks.*": {"queue": "market"},
        "apps.bots.tasks.*": {"queue": "bots"},
        "apps.backtest.tasks.*": {"queue": "backtest"},
    },
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()


@worker_process_init.connect
def _tune_worker_allocator(**_kwargs) -> None:
    """Each prefork child keeps freed large arrays for reuse (tradebot.memory: backtests re-allocate them per run)."""
    from tradebot.memory import tune_allocator

    tune_allocator()
