"""The Celery app: queues market / bots / backtest, late acks and prefetch 1 so a lost worker loses no task.

Runs `tradebot.settings.production` unless DJANGO_SETTINGS_MODULE says otherwise. Each queue has a soft and a hard
time limit (settings TRADEBOT_<QUEUE>_SOFT_TIME_LIMIT / TRADEBOT_<QUEUE>_TIME_LIMIT): a worker applies its own
configuration to every task routed to that queue when it starts (`worker_init`), so the senders (web, commands, beat)
put no limits in the messages and the machine that runs the queue decides.
"""

import os
from fnmatch import fnmatchcase

from celery import Celery
from celery.signals import worker_init, worker_process_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradebot.settings.production")

TASK_ROUTES = {
    # Exchange I/O on its own queue: a dead exchange can only slow collection, never bot ticks or backtests.
    "apps.market.tasks.collect_market_task": {"queue": "collect"},
    "apps.market.tasks.collect_watched_task": {"queue": "collect"},
    "apps.market.tasks.backfill_task": {"queue": "collect"},
    "apps.market.tasks.*": {"queue": "market"},
    "apps.bots.tasks.*": {"queue": "bots"},
    "apps.backtest.tasks.*": {"queue": "backtest"},
}

app = Celery("tradebot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue("market"), Queue("collect"), Queue("bots"), Queue("backtest")),
    task_default_queue="market",
    task_routes=TASK_ROUTES,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    # A task finishing while the result Redis restarts: its result and chord-part writes retry (backoff up to 10 s)
    # instead of failing the task after it succeeded, which failed whole sweeps (tests/reliability/test_redis_restart).
    result_backend_always_retry=True,
    result_backend_max_retries=30,
    worker_hijack_root_logger=False,
    worker_consumer="tradebot.worker_consumer:Consumer",  # survives a broker restart (see that module)
)
app.autodiscover_tasks()


@worker_process_init.connect
def _tune_worker_allocator(**_kwargs) -> None:
    """Each prefork child keeps freed large arrays for reuse (tradebot.memory: backtests re-allocate them per run)."""
    from tradebot.memory import tune_allocator

    tune_allocator()


def queue_of(task_name: str) -> str | None:
    """The queue a task is routed to (TASK_ROUTES), or None for tasks outside the apps (celery's own)."""
    for pattern, route in TASK_ROUTES.items():
        if fnmatchcase(task_name, pattern):
            return route["queue"]
    return None


def queue_time_limits(queue: str) -> tuple[float, float]:
    """(soft, hard) time limit in seconds of a queue, from the settings."""
    from django.conf import settings

    key = queue.upper()
    soft = getattr(settings, f"TRADEBOT_{key}_SOFT_TIME_LIMIT")
    hard = getattr(settings, f"TRADEBOT_{key}_TIME_LIMIT")
    return float(soft), float(hard)


def apply_queue_time_limits(celery_app: Celery = app) -> dict[str, tuple[float, float]]:
    """Give every registered task its queue's (soft, hard) limits; returns {task name: limits} of those changed."""
    celery_app.loader.import_default_modules()  # autodiscovered task modules (already imported in a worker)
    applied: dict[str, tuple[float, float]] = {}
    for name, task in list(celery_app.tasks.items()):
        queue = queue_of(name)
        if queue is None:
            continue
        soft, hard = queue_time_limits(queue)
        task.soft_time_limit, task.time_limit = soft, hard
        task._exec_options = None  # celery caches the task's publish options; they include the limits
        applied[name] = (soft, hard)
    return applied


@worker_init.connect
def _apply_time_limits(sender=None, **_kwargs) -> None:
    import django

    django.setup()  # idempotent; the tasks' modules import models
    apply_queue_time_limits(sender.app if sender is not None and getattr(sender, "app", None) else app)
