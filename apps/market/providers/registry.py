"""Providers by name: "ccxt" (option `exchange`: any ccxt id), "csv" (files), "replay" (stored history as a live feed).

Other code (and tests) may register more factories, e.g. a recorded-HTTP exchange, with `register(name, factory)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.market.providers.base import Provider, ProviderError

ProviderFactory = Callable[..., Provider]


class UnknownProviderError(ProviderError):
    """No provider registered under that name (field `provider`)."""

    def __init__(self, message: str, *, field: str | None = "provider", extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, field=field, extra=extra)


def _ccxt(**options: Any) -> Provider:
    from apps.market.providers.ccxt import CcxtProvider

    return CcxtProvider(**options)


def _csv(**options: Any) -> Provider:
    from apps.market.providers.csv import CsvProvider

    return CsvProvider(**options)


def _replay(**options: Any) -> Provider:
    from apps.market.providers.replay import ReplayProvider

    return ReplayProvider(**options)


_FACTORIES: dict[str, ProviderFactory] = {"ccxt": _ccxt, "csv": _csv, "replay": _replay}
BUILTIN_NAMES: tuple[str, ...] = ("ccxt", "csv", "replay")


def register(name: str, factory: ProviderFactory) -> None:
    """Make `get_provider(name, **options)` call `factory(**options)`."""
    if not name or len(name) > 16:
        raise ValueError(f"provider name must be 1..16 characters (it is stored in Market.provider), got {name!r}")
    _FACTORIES[name] = factory


def unregister(name: str) -> None:
    if name in BUILTIN_NAMES:
        raise ValueError(f"cannot unregister the built-in provider {name!r}")
    _FACTORIES.pop(name, None)


def available() -> list[str]:
    return sorted(_FACTORIES)


def get_provider(name: str, **options: Any) -> Provider:
    """A provider instance by registry name; unknown names are a clear error listing the known ones."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownProviderError(f"unknown provider {name!r}: expected one of {', '.join(available())}") from None
    try:
        return factory(**options)
    except TypeError as exc:  # wrong option names: say which provider and what it got
        if "argument" not in str(exc):
            raise
        raise ProviderError(f"provider {name!r} cannot be built with options {sorted(options)}: {exc}") from exc
