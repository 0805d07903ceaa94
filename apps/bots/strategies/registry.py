"""Strategies by name. Built-ins register on import; user strategies come from settings.TRADEBOT_STRATEGIES."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from apps.common.errors import ApplicationError

_REGISTRY: dict[str, type] = {}


class UnknownStrategyError(ApplicationError):
    """No strategy registered under that name (field `strategy`)."""

    def __init__(self, message: str, *, field: str | None = "strategy", extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, field=field, extra=extra)


def register(cls: type) -> type:
    """Class decorator: make a strategy available by its `name`."""
    from apps.bots.strategies.base import BaseStrategy

    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"{cls.__qualname__} needs a class attribute `name` to be registered")
    if not (isinstance(cls, type) and issubclass(cls, BaseStrategy)):
        raise TypeError(f"strategy {name!r} ({cls!r}) must subclass apps.bots.strategies.base.BaseStrategy")
    _REGISTRY[name] = cls
    return cls


def get_strategy_class(name: str) -> type:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}: expected one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_strategy(name: str, parameters: Mapping[str, Any] | None = None):
    """Instantiate a registered strategy with validated parameters (raises UnknownStrategyError / ParameterError)."""
    return get_strategy_class(name)(parameters)


def available() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    importlib.import_module("apps.bots.strategies.builtins")


def load_user_strategies(paths: list[str] | None = None) -> None:
    """Import "package.module.ClassName" entries and register them (the class may also self-register)."""
    if paths is None:
        from django.conf import settings

        paths = list(getattr(settings, "TRADEBOT_STRATEGIES", []))
    for dotted in paths:
        module_name, _, attr = dotted.rpartition(".")
        if not module_name:
            raise ValueError(f"TRADEBOT_STRATEGIES entry {dotted!r} must be 'package.module.ClassName'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"TRADEBOT_STRATEGIES entry {dotted!r}: cannot import {module_name!r} ({exc})") from exc
        try:
            cls = getattr(module, attr)
        except AttributeError:
            raise ImportError(f"TRADEBOT_STRATEGIES entry {dotted!r}: module {module_name!r} has no {attr!r}") from None
        register(cls)
