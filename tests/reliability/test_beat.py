"""Two beat processes at once, and a restarted beat: one send per schedule slot (tradebot.beat.SlotLockedScheduler).

Real `celery beat` processes on the test database's schedule (django-celery-beat) and the suite's Redis broker; the
test reads the messages they queued (no worker consumes them) and counts sends per (task, slot).
"""

from __future__ import annotations

import base64
import collections
import json
import signal

import pytest

from tests.reliability.harness import log_tail, process_env, start_beat, stop_process, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

SCHEDULER = "tradebot.beat:SlotLockedScheduler"
TASKS = {  # the three periodic tasks whose duplicates hurt, each every second here
    "apps.market.tasks.collect_watched_task": "market",
    "apps.bots.tasks.monitor_bots_task": "bots",
    "apps.market.tasks.create_partitions_task": "market",
}


@pytest.fixture
def schedule(redis_client):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    for task, queue in TASKS.items():
        PeriodicTask.objects.create(name=f"h12 {task}", task=task, interval=every, queue=queue,
                                    kwargs=json.dumps({"months": 0}) if "partitions" in task else "{}")
    _clear(redis_client)
    yield
    _clear(redis_client)


def _clear(client) -> None:
    for queue in set(TASKS.values()):
        client.delete(queue)
    for key in client.scan_iter("tradebot:beat:slot:*"):
        client.delete(key)


def sends(client) -> collections.Counter:
    """(task, slot) -> number of messages queued for it."""
    out: collections.Counter = collections.Counter()
    for queue in set(TASKS.values()):
        for raw in client.lrange(queue, 0, -1):
            message = json.loads(raw)
            headers = message["headers"]
            base64.b64decode(message["body"])  # a well-formed task message
            out[(headers["task"], headers.get("tradebot_beat_slot"))] += 1
    return out


def slots_per_task(counter) -> dict[str, int]:
    per: dict[str, int] = collections.Counter()
    for task, _slot in counter:
        per[task] += 1
    return per


def test_given_two_beats_at_once_then_each_periodic_task_is_sent_once_per_slot(schedule, redis_client, figures):
    env = process_env()
    beats = [start_beat(env, scheduler=SCHEDULER) for _ in range(2)]
    try:
        wait_until(lambda: all(n >= 6 for n in slots_per_task(sends(redis_client)).values())
                   and len(slots_per_task(sends(redis_client))) == len(TASKS),
                   what="both beats sent 6 slots of every task", limit_s=50)
        alive = [b.poll() is None for b in beats]
    finally:
        for b in beats:
            stop_process(b)
    counter = sends(redis_client)
    logs = [log_tail(b, 200000) for b in beats]
    skipped = sum(log.count("already sent by another beat") for log in logs)
    figures.fault = "two celery beat processes on one schedule"
    figures.faults_injected = 1
    figures.decisions = len(counter)
    figures.doubled = sum(n - 1 for n in counter.values())
    figures.extra = {"sends_skipped_by_the_slot_lock": skipped, "slots_per_task": slots_per_task(counter)}
    assert all(alive), [log_tail(b) for b in beats]
    assert None not in {slot for _task, slot in counter}  # every send was slotted
    assert skipped > 0  # the second beat really was there and lost slots to the first
    figures.check("collection rounds, monitor passes and partition creations: one message per (task, slot) while "
                  "two beats ran; the other beat logged its skipped slots")
    figures.assert_nothing_lost_or_doubled()


def test_given_beat_restarted_then_the_schedule_continues_and_no_slot_is_sent_twice(schedule, redis_client, figures):
    env = process_env()
    collect = "apps.market.tasks.collect_watched_task"
    first = start_beat(env, scheduler=SCHEDULER)
    try:
        wait_until(lambda: slots_per_task(sends(redis_client)).get(collect, 0) >= 4, what="4 slots before restart",
                   limit_s=40)
    finally:
        stop_process(first, signal.SIGTERM)
    before = slots_per_task(sends(redis_client)).get(collect, 0)
    second = start_beat(env, scheduler=SCHEDULER)
    try:
        wait_until(lambda: slots_per_task(sends(redis_client)).get(collect, 0) >= before + 4,
                   what="4 more slots after restart", limit_s=40)
    finally:
        stop_process(second, signal.SIGTERM)
    counter = sends(redis_client)
    figures.fault = "beat stopped and started again"
    figures.faults_injected = 1
    figures.decisions = len(counter)
    figures.doubled = sum(n - 1 for n in counter.values())
    figures.extra = {"collect_slots_before_restart": before,
                     "collect_slots_total": slots_per_task(counter).get(collect, 0)}
    figures.check("the restarted beat continued the schedule; no (task, slot) was sent twice")
    figures.assert_nothing_lost_or_doubled()
