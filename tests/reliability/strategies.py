"""Strategies that let a test steer a real worker process (loaded there through TRADEBOT_STRATEGIES).

All are sma_cross with a side effect in `compute`, coordinated through the suite's Redis (keys under KEY_PREFIX):
- BlockOnce ("h12_block_once"): the first compute (across all processes) stores its pid and blocks until the test
  sets the release key (or kills the process); every later compute runs normally. Counts computes.
- AlwaysTransient ("h12_always_transient"): every compute raises a transient OperationalError.
- Counting ("h12_counting"): counts computes.
- Barrier ("h12_barrier"): each compute waits (bounded) until two computes are inside it at once, so two concurrent
  ticks of one bot overlap for sure unless something serialises them.
Built lazily: the strategy base class needs Django set up.
"""

from __future__ import annotations

import os
import time

KEY_PREFIX = "tradebot:test:h12:"
CALLS = KEY_PREFIX + "calls"
PID = KEY_PREFIX + "pid"
RELEASE = KEY_PREFIX + "release"
INSIDE = KEY_PREFIX + "inside"
PATHS = ",".join(f"tests.reliability.strategies.{n}" for n in ("BlockOnce", "AlwaysTransient", "Counting", "Barrier"))


def redis_client():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


def reset_keys() -> None:
    client = redis_client()
    for key in client.scan_iter(KEY_PREFIX + "*"):
        client.delete(key)


def _exists(client, key: str) -> bool:
    """EXISTS that rides out a Redis restart (the test restarts the worker's Redis while this loop waits)."""
    try:
        return bool(client.exists(key))
    except Exception:  # noqa: BLE001 - not reachable right now: keep waiting
        return False


def _incr(client, key: str) -> int:
    """INCR that rides out a Redis restart (bounded): the count must not be lost, nor the task failed by the test."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return int(client.incr(key))
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _build():
    from django.db import OperationalError

    from apps.bots.strategies.registry import get_strategy_class

    base = get_strategy_class("sma_cross")

    class BlockOnce(base):
        name = "h12_block_once"

        def compute(self, *args, **kwargs):
            r = redis_client()
            if _incr(r, CALLS) == 1:
                r.set(PID, os.getpid())
                deadline = time.monotonic() + 60
                while not _exists(r, RELEASE) and time.monotonic() < deadline:
                    time.sleep(0.05)
            return super().compute(*args, **kwargs)

    class AlwaysTransient(base):
        name = "h12_always_transient"

        def compute(self, *args, **kwargs):
            redis_client().incr(CALLS)
            raise OperationalError("simulated transient database failure (every call)")

    class Counting(base):
        name = "h12_counting"

        def compute(self, *args, **kwargs):
            redis_client().incr(CALLS)
            return super().compute(*args, **kwargs)

    class Barrier(base):
        name = "h12_barrier"

        def compute(self, *args, **kwargs):
            r = redis_client()
            r.incr(CALLS)
            r.incr(INSIDE)
            deadline = time.monotonic() + 3
            while int(r.get(INSIDE) or 0) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            try:
                return super().compute(*args, **kwargs)
            finally:
                r.decr(INSIDE)

    return {c.__name__: c for c in (BlockOnce, AlwaysTransient, Counting, Barrier)}


def register_all() -> None:
    """Register the test strategies in this (the test) process too."""
    from apps.bots.strategies.registry import register

    for cls in _build_cached().values():
        register(cls)


_CACHE: dict = {}


def _build_cached() -> dict:
    if not _CACHE:
        _CACHE.update(_build())
    return _CACHE


def __getattr__(name: str):
    classes = _build_cached()
    if name in classes:
        return classes[name]
    raise AttributeError(name)
