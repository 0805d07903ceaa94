"""Leases in Redis: each streamed market is owned by exactly one stream process, with a fencing token.

`acquire` is `SET key owner NX PX ttl` plus `INCR` of the market's fence counter, in one Lua script, so every new owner
gets a larger token. The owner renews every few seconds (`renew` extends the TTL only if the key still holds its own
name). A process that stops renewing (killed, frozen) loses the key after `ttl`; the next process to ask gets it.
The token is checked by the database write (`services.ingest_candles(fence=...)` against Market.stream_fence), so a
stale owner that wakes up after losing its lease cannot write: fenced, not just timed.
"""

from __future__ import annotations

import redis
from django.conf import settings

PREFIX = "tradebot:stream"

_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def lease_key(market_id: int) -> str:
    return f"{PREFIX}:lease:{market_id}"


def fence_key(market_id: int) -> str:
    return f"{PREFIX}:fence:{market_id}"


class Leases:
    """Lease operations for one owner (a stream process: host:pid:random)."""

    def __init__(self, owner: str, *, ttl_ms: int | None = None, client: redis.Redis | None = None) -> None:
        self.owner = owner
        self.ttl_ms = int(ttl_ms or settings.TRADEBOT_STREAM_LEASE_MS)
        self.redis = client or redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)

    def acquire(self, market_id: int) -> int | None:
        """The fencing token if this owner got the market's lease now, else None (someone holds it)."""
        token = int(self._acquire(keys=[lease_key(market_id), fence_key(market_id)], args=[self.owner, self.ttl_ms]))
        return token or None

    def renew(self, market_id: int) -> bool:
        """Extend the lease; False if it is no longer ours (expired and maybe taken)."""
        return bool(self._renew(keys=[lease_key(market_id)], args=[self.owner, self.ttl_ms]))

    def release(self, market_id: int) -> bool:
        return bool(self._release(keys=[lease_key(market_id)], args=[self.owner]))

    def holder(self, market_id: int) -> str | None:
        value = self.redis.get(lease_key(market_id))
        return value.decode() if value is not None else None
