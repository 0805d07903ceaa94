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
# Exchange names served by a provider of their own (not a ccxt id): a market of that exchange gets that provider.
DEFAULT_PROVIDER = "ccxt"
_EXCHANGES: dict[str, str] = {"replay": "replay"}


def register(name: str, factory: ProviderFactory, *, exchanges: tuple[str, ...] = ()) -> None:
    """Make `get_provider(name, **options)` call `factory(**options)`; new markets of `exchanges` get this provider."""
    if not name or len(name) > 16:
        raise ValueError(f"provider name must be 1..16 characters (it is stored in Market.provider), got {name!r}")
    _FACTORIES[name] = factory
    for exchange in exchanges:
        _EXCHANGES[exchange] = name


def unregister(name: str) -> None:
    if name in BUILTIN_NAMES:
        raise ValueError(f"cannot unregister the built-in provider {name!r}")
    _FACTORIES.pop(name, None)
    for exchange in [e for e, n in _EXCHANGES.items() if n == name]:
        del _EXCHANGES[exchange]


def provider_for_exchange(exchange: str) -> str:
    """The provider a new market of `exchange` gets when none is named: the one registered for that exchange name
    (`replay` for the replay exchange), else ccxt (any ccxt exchange id)."""
    return _EXCHANGES.get(exchange, DEFAULT_PROVIDER)


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
