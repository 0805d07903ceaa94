"""setup_periodic_tasks writes the beat schedule into django_celery_beat's tables, idempotently."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from apps.market import tasks

pytestmark = pytest.mark.django_db


def snapshot() -> tuple:
    return (
        sorted(PeriodicTask.objects.values_list("pk", "name", "task", "interval_id", "crontab_id", "queue", "enabled")),
        sorted(IntervalSchedule.objects.values_list("pk", "every", "period")),
        sorted(CrontabSchedule.objects.values_list("pk", "minute", "hour", "day_of_week", "day_of_month")),
    )


def test_given_an_empty_schedule_when_setting_up_then_collection_every_minute_and_partitions_daily():
    out = io.StringIO()

    call_command("setup_periodic_tasks", stdout=out)

    collect = PeriodicTask.objects.get(task="apps.market.tasks.collect_watched_task")
    assert (collect.interval.every, collect.interval.period) == (1, IntervalSchedule.MINUTES)
    assert collect.crontab is None and collect.enabled and collect.queue == "market"
    assert collect.expire_seconds == 55
    partitions = PeriodicTask.objects.get(task="apps.market.tasks.create_partitions_task")
    assert (partitions.crontab.minute, partitions.crontab.hour, partitions.crontab.day_of_week) == ("7", "0", "*")
    assert str(partitions.crontab.timezone) == "UTC" and partitions.interval is None
    # the names beat will call exist as registered Celery tasks
    assert collect.task == tasks.collect_watched_task.name and partitions.task == tasks.create_partitions_task.name
    assert "created: market: collect watched markets" in out.getvalue()


def test_given_the_schedule_exists_when_setting_up_again_then_the_same_rows_remain_and_beat_is_not_poked():
    call_command("setup_periodic_tasks", stdout=io.StringIO())
    before = snapshot()
    changed_at = PeriodicTasks.last_change()
    out = io.StringIO()

    call_command("setup_periodic_tasks", stdout=out)

    assert snapshot() == before
    assert PeriodicTasks.last_change() == changed_at  # nothing rewritten: beat does not reload its schedule
    assert out.getvalue().count("unchanged:") == len(before[0])


def test_given_an_edited_schedule_when_setting_up_again_then_it_is_restored_in_place():
    call_command("setup_periodic_tasks", stdout=io.StringIO())
    collect = PeriodicTask.objects.get(task="apps.market.tasks.collect_watched_task")
    collect.interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    collect.enabled = False
    collect.save()

    call_command("setup_periodic_tasks", stdout=io.StringIO())

    restored = PeriodicTask.objects.get(pk=collect.pk)
    assert restored.enabled and restored.interval.every == 1
    assert PeriodicTask.objects.filter(task="apps.market.tasks.collect_watched_task").count() == 1
