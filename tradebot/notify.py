"""publish(channel, payload): Redis pub/sub, or in-process delivery on the embedded default.

Fire-and-forget by design: nothing depends on a notification for correctness (the database is the source of truth and
catch-up covers what a notification missed), so a publish failure is logged, never raised.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]

_lock = threading.Lock()
_subscribers: dict[str, list[Handler]] = defaultdict(list)
_redis_client = None


def market_channel(symbol: str) -> str:
    return f"market:{symbol}"


def signals_channel(bot_id: int) -> str:
    return f"signals:{bot_id}"


def status_channel(bot_id: int) -> str:
    return f"status:{bot_id}"


SYSTEM_CHANNEL = "system:events"


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
    return _redis_client


def publish(channel: str, payload: dict[str, Any]) -> None:
    try:
        if settings.NOTIFY_BACKEND == "redis":
            _redis().publish(channel, orjson.dumps(payload))
        else:
            with _lock:
                handlers = list(_subscribers.get(channel, ())) + list(_subscribers.get("*", ()))
            for handler in handlers:
                handler(channel, payload)
    except Exception:  # noqa: BLE001 - notifications must never break the work that emits them
        logger.exception("publish to %s failed", channel)


def publish_many(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish a batch in one round trip (a pipeline) when on Redis."""
    if not messages:
        return
    if settings.NOTIFY_BACKEND == "redis":
        try:
            pipe = _redis().pipeline(transaction=False)
            for channel, payload in messages:
                pipe.publish(channel, orjson.dumps(payload))
            pipe.execute()
        except Exception:  # noqa: BLE001
            logger.exception("batch publish of %d messages failed", len(messages))
        return
    for channel, payload in messages:
        publish(channel, payload)


def subscribe(channel: str, handler: Handler) -> Callable[[], None]:
    """In-process subscription (embedded default). Channel "*" receives everything. Returns an unsubscribe."""
    with _lock:
        _subscribers[channel].append(handler)

    def unsubscribe() -> None:
        with _lock:
            if handler in _subscribers.get(channel, []):
                _subscribers[channel].remove(handler)

    return unsubscribe
