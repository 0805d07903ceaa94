"""The beat scheduler: django-celery-beat's DatabaseScheduler plus one send per schedule slot across all beats.

Two beat processes at once (a common deployment accident) or a restarted beat would otherwise send the same periodic
task twice for one slot: duplicate collection rounds, monitor passes, partition creations. Before sending an entry,
the scheduler claims its slot in Redis with `SET key NX EX` — the slot is the schedule period the send falls in
(interval schedules: floor(now / period); crontab schedules: the minute) — and skips the send when another beat
claimed it already. The claim is a lock per (entry, slot), not leader election: every beat keeps its schedule and
whichever comes first in a slot sends it. The slot number goes into the message headers (`tradebot_beat_slot`) so a
consumer or a test can see which slot a message belongs to.

Fail-open: when Redis cannot be asked (it is also the broker, so the send would fail anyway) the entry is sent.
Without REDIS_URL (embedded default, one process) there is nothing to coordinate and nothing is claimed.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from celery.schedules import crontab, schedule
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

KEY_PREFIX = "tradebot:beat:slot:"
SLOT_HEADER = "tradebot_beat_slot"


def slot_of(entry_schedule, now: float) -> tuple[int, int] | None:
    """(slot number, slot length in seconds) of a send at `now` (epoch seconds), or None when not slotted."""
    if isinstance(entry_schedule, crontab):
        return int(now // 60), 60
    if isinstance(entry_schedule, schedule):
        period = entry_schedule.run_every.total_seconds()
        if period >= 1:
            return int(now // period), int(period)
    return None


class SlotLockedScheduler(DatabaseScheduler):
    """DatabaseScheduler whose sends are deduplicated per (entry, slot) across every beat process."""

    def __init__(self, *args, **kwargs):
        self._slot_redis = None
        self._beat_id = f"{socket.gethostname()}:{os.getpid()}"
        super().__init__(*args, **kwargs)

    def _redis(self):
        if self._slot_redis is None and settings.REDIS_URL:
            import redis

            self._slot_redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        return self._slot_redis

    def claim(self, name: str, slot: int, length: int) -> bool:
        client = self._redis()
        if client is None:
            return True
        try:
            return bool(client.set(f"{KEY_PREFIX}{name}:{slot}", self._beat_id, nx=True, ex=max(2 * length, 120)))
        except Exception:  # noqa: BLE001 - fail-open: Redis is the broker too, the send reports the outage itself
            logger.warning("beat: cannot claim slot %s of %r in Redis; sending anyway", slot, name, exc_info=True)
            return True

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        found = slot_of(entry.schedule, time.time())
        if found is not None:
            slot, length = found
            if not self.claim(entry.name, slot, length):
                logger.info("beat: %r slot %s was already sent by another beat; skipped", entry.name, slot)
                return None
            entry.options = {**entry.options, "headers": {**entry.options.get("headers", {}), SLOT_HEADER: slot}}
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
