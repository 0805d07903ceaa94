"""Throttles (counted in the Django cache, which is Redis when REDIS_URL is set, so all web processes share them).

Rates come from settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]: `anon`, `user` and `login` (token requests and
failed logins, keyed by client IP). A throttled request gets a 429 with `Retry-After`.

Counting: a window per client opens at its first request and lasts the rate's period; each request is one atomic
INCR of a counter that expires with the window (O(1) per request). DRF's own throttles keep every request's time in
one cached list, read and rewritten whole on each request: at the user rate (6000/minute) that is a 50 kB pickle per
request, the largest cost of a hot list endpoint under load (bench/api.py).
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class _WindowCounter:
    """A fixed window per client, opened by its first request (allows `num_requests` per `duration`)."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        if self.cache.add(self.key, 0, self.duration):  # SET NX with the window's expiry: a new window opens
            self.cache.set(f"{self.key}:t0", self.now, self.duration)
        try:
            count = self.cache.incr(self.key)
        except ValueError:  # the window expired between add and incr
            self.cache.set(self.key, 1, self.duration)
            count = 1
        return count <= self.num_requests

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
