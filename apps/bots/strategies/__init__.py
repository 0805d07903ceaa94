"""Strategies: subclass `BaseStrategy`, declare `Param`s, implement one form (compute / populate / process_data),
decorate with `@register`. Pure: no Django (user strategies load from settings via `registry.load_user_strategies`)."""

from apps.bots.strategies.base import (
    Action,
    BaseStrategy,
    Param,
    ParameterError,
    Signal,
    StrategyOutput,
    finish,
)
from apps.bots.strategies.registry import available, create_strategy, get_strategy_class, register

__all__ = [
    "Action", "BaseStrategy", "Param", "ParameterError", "Signal", "StrategyOutput", "finish",
    "available", "create_strategy", "get_strategy_class", "register",
]
