"""Throttles (counted in the Django cache, which is Redis when REDIS_URL is set, so all web processes share them).

Rates come from settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]: `anon`, `user` and `login` (token requests and
failed logins, keyed by client IP). A throttled request gets a 429 with `Retry-After`.

Counting: a window per client opens at its first request and lasts the rate's period; each request is one atomic
INCR of a counter that expires with the window (O(1) per request). DRF's own throttles keep every request's time in
one cached list, read and rewritten whole on each request: at the user rate (6000/minute) that is a 50 kB pickle per
request, the largest cost of a hot list endpoint under load (bench/api.py). On Redis the window is opened and counted
by one script (one round trip; Django's cache API takes three: SET NX, EXISTS, INCR).
"""

from __future__ import annotations

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

# KEYS: counter, window start. ARGV: window seconds, now (whole seconds, so the cache reads it back as an int).
_COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 or redis.call('TTL', KEYS[1]) == -1 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
end
return count
"""


class _WindowCounter:
    """A fixed window per client, opened by its first request (allows `num_requests` per `duration`)."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        return self._count() <= self.num_requests

    def _count(self) -> int:
        cache = caches[DEFAULT_CACHE_ALIAS]  # the one DRF's throttles use (rest_framework.throttling.default_cache)
        if isinstance(cache, RedisCache):
            client = cache._cache.get_client(self.key, write=True)
            keys = (cache.make_and_validate_key(self.key), cache.make_and_validate_key(f"{self.key}:t0"))
            return client.eval(_COUNT_SCRIPT, 2, *keys, self.duration, int(self.now))
        if cache.add(self.key, 0, self.duration):  # SET NX with the window's expiry: a new window opens
            cache.set(f"{self.key}:t0", self.now, self.duration)
        try:
            return cache.incr(self.key)
        except ValueError:  # the window expired between add and incr
            cache.set(self.key, 1, self.duration)
            return 1

    def wait(self):
        opened = self.cache.get(f"{self.key}:t0")
        remaining = self.duration - (self.now - opened) if opened is not None else self.duration
        return max(remaining, 1.0)


class _LiveRates:
    """Read the rate when the throttle is built (DRF binds THROTTLE_RATES at import, so a changed setting is missed)."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_LiveRates, _WindowCounter, AnonRateThrottle):
    scope = "anon"


class UserThrottle(_LiveRates, _WindowCounter, UserRateThrottle):
    scope = "user"


class LoginThrottle(_LiveRates, _WindowCounter, SimpleRateThrottle):
    """Every POST to the token endpoint counts, by client address, whoever it claims to be."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
