"""A dashboard client that stops reading its live feed (SSE, Redis pub/sub) while a flood of messages arrives, against
a real gunicorn (gthread) server: the server's memory stays bounded (the per-client buffer, tradebot/dashboard/
live.py), the slow client is dropped (its stream ends with a `dropped` event once it reads again), and the server
keeps answering other requests meanwhile."""

from __future__ import annotations

import random
import socket
import sys
import time
from pathlib import Path

import orjson
import pytest
import redis
from django.conf import settings
from django.test import Client

from apps.bots.models import Bot
from tests.reliability.harness import free_port, log_tail, process_env, start_process, stop_process, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

FLOOD = 50_000
PAYLOAD = "x" * 900  # ~1 KB a message: ~20 MB in all


def _rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (gunicorn master + worker), from /proc."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _get(port: int, path: str, cookie: str = "", timeout: float = 5.0) -> tuple[int, float]:
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(64)
    return int(head.split()[1]), time.monotonic() - t0


def test_given_a_dashboard_client_that_stops_reading_under_a_flood_then_memory_is_bounded_it_is_dropped_server_fine(
        django_user_model, figures):
    user = django_user_model.objects.create_user("h12-slow", password="x")
    bot = Bot.objects.create(pk=random.randint(10**8, 2 * 10**8), name="h12-slow-feed", strategy="sma_cross",
                             parameters={"fast": 5, "slow": 20}, exchange="h12sse", symbol="BTC/USDT", timeframe="1m")
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    port = free_port()
    env = process_env(extra={"NOTIFY_BACKEND": "redis"})
    server = start_process([sys.executable, "-m", "gunicorn", "tradebot.wsgi", "--bind", f"127.0.0.1:{port}",
                            "--workers", "1", "--worker-class", "gthread", "--threads", "4", "--timeout", "120"], env)
    try:
        wait_until(lambda: _ping(port), what="gunicorn answering", limit_s=30)
        idle_kb = _rss_kb(server.pid)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes block soon
        slow.connect(("127.0.0.1", port))
        slow.sendall(f"GET /dashboard/bots/{bot.pk}/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                     f"Accept: text/event-stream\r\n\r\n".encode())
        first = b""
        while b"event: hello" not in first:
            chunk = slow.recv(4096)
            assert chunk, first
            first += chunk
        assert b" 200 " in first.split(b"\r\n", 1)[0], first[:200]

        pub = redis.Redis.from_url(settings.REDIS_URL)
        channel = f"signals:{bot.pk}"
        t0 = time.monotonic()
        answered: list[tuple[int, float]] = []
        peak_kb = idle_kb
        pipe = pub.pipeline(transaction=False)
        for i in range(FLOOD):
            pipe.publish(channel, orjson.dumps({"i": i, "pad": PAYLOAD}))
            if i % 2000 == 1999:
                pipe.execute()
                answered.append(_get(port, "/accounts/login/"))  # another user, served meanwhile
                peak_kb = max(peak_kb, _rss_kb(server.pid))
        pipe.execute()
        flood_s = time.monotonic() - t0
        time.sleep(1.0)
        peak_kb = max(peak_kb, _rss_kb(server.pid))

        # The client reads again: what it gets is bounded and ends with `dropped`.
        slow.settimeout(10)
        received = first
        read_until = time.monotonic() + 20  # bounded even if the server had buffered the whole flood
        while time.monotonic() < read_until:
            chunk = slow.recv(65536)
            if not chunk:
                break
            received += chunk
            if b"event: dropped" in received and received.rstrip().endswith(b"}"):
                break
        slow.close()
        after = _get(port, "/accounts/login/")
        alive = server.poll() is None
        pub.close()
    finally:
        log = log_tail(server)
        stop_process(server)
    events = received.count(b"event: signals")
    flood_kb = FLOOD * (len(PAYLOAD) + 30) // 1024
    figures.fault = f"a dashboard SSE client that stops reading while {FLOOD} messages (~{flood_kb // 1024} MB) arrive"
    figures.faults_injected = 1
    figures.decisions = FLOOD
    figures.extra = {"idle_rss_kb": idle_kb, "peak_rss_kb": peak_kb, "growth_kb": peak_kb - idle_kb,
                     "flood_kb": flood_kb, "flood_s": round(flood_s, 2), "events_delivered_to_slow_client": events,
                     "bytes_delivered_to_slow_client": len(received),
                     "other_requests_max_s": round(max(s for _, s in answered + [after]), 3)}
    assert alive, log
    assert b"event: dropped" in received, received[-500:]
    assert events < FLOOD // 10  # the server did not buffer the flood for it
    assert peak_kb - idle_kb < flood_kb // 4, (idle_kb, peak_kb)  # memory did not follow the flood
    assert all(status == 200 for status, _ in answered + [after])
    figures.check(f"{FLOOD} messages (~{flood_kb // 1024} MB) while the client read nothing: server RSS grew "
                  f"{(peak_kb - idle_kb) // 1024} MB, the client got {events} events then `dropped`; "
                  f"{len(answered) + 1} other requests answered 200 meanwhile (slowest "
                  f"{max(s for _, s in answered + [after]):.2f}s), the server still up")


def _ping(port: int) -> bool:
    try:
        return _get(port, "/accounts/login/", timeout=1.0)[0] == 200
    except OSError:
        return False
