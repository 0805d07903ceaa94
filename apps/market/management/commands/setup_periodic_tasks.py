"""manage.py setup_periodic_tasks: create/update the beat schedule in the database (django_celery_beat). Idempotent.

The market schedule is below. Other apps add theirs without editing this file: a module `apps.<app>.schedule` with
`PERIODIC_TASKS = [{"name", "task", "interval": (every, "minutes"|"seconds"|"hours"|"days") | "crontab": {...},
"queue", "kwargs", "expire_seconds", "description"}]` is picked up when present.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from django.apps import apps as django_apps
from django.core.management.base import CommandError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from apps.common.management import DomainCommand

MARKET_TASKS: list[dict[str, Any]] = [
    {
        "name": "market: collect watched markets",
        "task": "apps.market.tasks.collect_watched_task",
        "interval": (1, IntervalSchedule.MINUTES),
        "queue": "market",
        # A round that could not start within the minute is superseded by the next one: never pile up.
        "expire_seconds": 55,
        "description": "Every minute: one collect_market_task per watched market (starting a bot watches its market).",
    },
    {
        "name": "market: create raw_trades partitions",
        "task": "apps.market.tasks.create_partitions_task",
        "crontab": {"minute": "7", "hour": "0"},
        "queue": "market",
        "description": "Daily: create raw_trades month partitions ahead (TRADEBOT_RAW_TRADES_MONTHS_AHEAD).",
    },
]

PERIODS = {
    "seconds": IntervalSchedule.SECONDS,
    "minutes": IntervalSchedule.MINUTES,
    "hours": IntervalSchedule.HOURS,
    "days": IntervalSchedule.DAYS,
}


def discovered_tasks() -> list[dict[str, Any]]:
    """PERIODIC_TASKS of every installed project app that has a `schedule` module."""
    found: list[dict[str, Any]] = []
    for config in django_apps.get_app_configs():
        if not config.name.startswith("apps.") or config.name == "apps.market":
            continue
        try:
            module = importlib.import_module(f"{config.name}.schedule")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.schedule":
                raise
            continue
        found.extend(getattr(module, "PERIODIC_TASKS", []))
    return found


def _interval(every: int, period: str) -> IntervalSchedule:
    period = PERIODS.get(period, period)
    row = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
    return row or IntervalSchedule.objects.create(every=every, period=period)


def _crontab(spec: dict[str, str]) -> CrontabSchedule:
    fields = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*", **spec}
    fields.setdefault("timezone", "UTC")
    row = CrontabSchedule.objects.filter(**fields).order_by("pk").first()
    return row or CrontabSchedule.objects.create(**fields)


def apply_entry(entry: dict[str, Any]) -> tuple[PeriodicTask, str]:
    """Create or update one PeriodicTask; returns (row, 'created'|'updated'|'unchanged')."""
    name = entry.get("name")
    if not name or not entry.get("task"):
        raise CommandError(f"periodic task entry needs 'name' and 'task': {entry!r}")
    if ("interval" in entry) == ("crontab" in entry):
        raise CommandError(f"periodic task {name!r}: give exactly one of 'interval' or 'crontab'")
    wanted: dict[str, Any] = {
        "task": entry["task"],
        "interval": _interval(*entry["interval"]) if "interval" in entry else None,
        "crontab": _crontab(entry["crontab"]) if "crontab" in entry else None,
        "queue": entry.get("queue") or None,
        "kwargs": json.dumps(entry.get("kwargs", {}), sort_keys=True),
        "expire_seconds": entry.get("expire_seconds"),
        "description": entry.get("description", ""),
        "enabled": entry.get("enabled", True),
    }
    row = PeriodicTask.objects.filter(name=name).first()
    if row is None:
        return PeriodicTask.objects.create(name=name, **wanted), "created"
    changed = [k for k, v in wanted.items() if getattr(row, k) != v]
    if not changed:
        return row, "unchanged"
    for k in changed:
        setattr(row, k, wanted[k])
    row.save()
    return row, "updated"


class Command(DomainCommand):
    help = "Create or update the Celery beat schedule (collection every minute, partitions daily, apps' schedules)."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            for entry in [*MARKET_TASKS, *discovered_tasks()]:
                row, what = apply_entry(entry)
                schedule = row.interval or row.crontab
                self.stdout.write(f"{what}: {row.name} -> {row.task} ({schedule})")
