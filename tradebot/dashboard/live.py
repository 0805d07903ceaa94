"""Server-sent events fed by Redis pub/sub, with a bounded buffer per client.

A reader thread moves messages from the Redis subscription into a queue of at most MAX_BUFFER events; if the client
reads too slowly and the queue is full, the client is dropped (the stream ends with a `dropped` event — the browser's
EventSource reconnects, and the page falls back to polling the API meanwhile). The server never buffers without bound.
A connection lives at most MAX_SECONDS, then ends cleanly (EventSource reconnects).
"""

from __future__ import annotations

import queue
import threading
import time

import orjson
from django.conf import settings

MAX_BUFFER = 100
MAX_SECONDS = 300
HEARTBEAT_SECONDS = 10


def sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream(channels: list[str], *, max_buffer: int = MAX_BUFFER, max_seconds: float = MAX_SECONDS):
    """Yield SSE bytes for messages on `channels` until the client is too slow, the time is up or it leaves."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=HEARTBEAT_SECONDS + 5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*channels)
    buffer: queue.Queue = queue.Queue(maxsize=max_buffer)
    stop = threading.Event()
    overflow = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                msg = pubsub.get_message(timeout=1.0)
            except Exception:  # noqa: BLE001 - Redis went away: end the stream, the client reconnects
                overflow.set()
                return
            if msg is None:
                continue
            try:
                buffer.put_nowait((msg["channel"].decode(), orjson.loads(msg["data"])))
            except queue.Full:
                overflow.set()  # slow client: drop it rather than buffer without bound
                return
            except ValueError:
                continue

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + max_seconds
    try:
        yield b"retry: 3000\n" + sse("hello", {"channels": channels})
        while time.monotonic() < deadline and not overflow.is_set():
            try:
                channel, payload = buffer.get(timeout=HEARTBEAT_SECONDS)
            except queue.Empty:
                yield b": heartbeat\n\n"
                continue
            yield sse(channel.split(":", 1)[0], payload)
        if overflow.is_set():
            yield sse("dropped", {"reason": "client too slow or feed lost; reconnect"})
    finally:
        stop.set()
        thread.join(timeout=3)
        pubsub.close()
        client.close()
