"""Server-sent events from Redis pub/sub: messages arrive as events; a client slower than its bounded buffer is
dropped (the stream ends with a `dropped` event) instead of the server buffering without bound."""

from __future__ import annotations

import uuid

import orjson
import pytest
import redis
from django.conf import settings

from tradebot.dashboard import live


@pytest.fixture
def channel():
    return f"signals:h9-test-{uuid.uuid4().hex}"


def _publish(channel: str, n: int) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    for i in range(n):
        client.publish(channel, orjson.dumps({"i": i}))
    client.close()


def test_given_a_subscriber_when_a_message_is_published_then_it_arrives_as_an_event(channel):
    gen = live.stream([channel], max_seconds=30)
    assert b"event: hello" in next(gen)
    _publish(channel, 1)
    chunk = next(gen)
    while chunk.startswith(b":"):  # heartbeats
        chunk = next(gen)
    assert chunk == b'event: signals\ndata: {"i":0}\n\n'
    gen.close()


def test_given_a_client_that_does_not_read_when_more_than_its_buffer_arrives_then_it_is_dropped(channel):
    gen = live.stream([channel], max_buffer=3, max_seconds=30)
    next(gen)  # subscribed
    _publish(channel, 50)  # the client reads nothing meanwhile
    chunks = list(gen)  # the stream ends by itself
    events = [c for c in chunks if c.startswith(b"event: signals")]
    assert chunks[-1].startswith(b"event: dropped")
    assert len(events) <= 3
