"""Throttles (counted in the Django cache, which is Redis when REDIS_URL is set, so all web processes share them).

Rates come from settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]: `anon`, `user` and `login` (token requests and
failed logins, keyed by client IP). A throttled request gets a 429 with `Retry-After`.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle


class _LiveRates:
    """Read the rate when the throttle is built (DRF binds THROTTLE_RATES at import, so a changed setting is missed)."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(_LiveRates, AnonRateThrottle):
    scope = "anon"


class UserThrottle(_LiveRates, UserRateThrottle):
    scope = "user"


class LoginThrottle(_LiveRates, SimpleRateThrottle):
    """Every POST to the token endpoint counts, by client address, whoever it claims to be."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
