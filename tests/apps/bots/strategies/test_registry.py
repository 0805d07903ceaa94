"""Registry: built-ins by name, clear errors, and user strategies registered by dotted path from settings."""

from __future__ import annotations

import pytest

from apps.bots.apps import load_configured_strategies
from apps.bots.strategies import registry
from apps.bots.strategies.base import ACTION_LABELS, BaseStrategy
from apps.bots.strategies.registry import (
    UnknownStrategyError,
    available,
    create_strategy,
    get_strategy_class,
    load_user_strategies,
)

USER_PATH = "tests.apps.bots.strategies.user_strategies.CloseAboveOpenStreak"


@pytest.fixture
def clean_registry():
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_given_builtin_names_when_looked_up_then_strategy_classes():
    for name in ("sma_cross", "ema_cross", "rsi", "macd", "bollinger"):
        cls = get_strategy_class(name)
        assert issubclass(cls, BaseStrategy) and cls.name == name
    assert available() == sorted(available())


def test_given_an_unknown_name_when_looked_up_then_the_error_lists_the_choices():
    with pytest.raises(UnknownStrategyError) as info:
        get_strategy_class("smacross")
    assert str(info.value).startswith("unknown strategy 'smacross': expected one of bollinger, ema_cross")


def test_given_a_name_and_parameters_when_created_then_a_validated_instance():
    strategy = create_strategy("rsi", {"period": 21})
    assert strategy.parameters == {"period": 21, "oversold": 30.0, "overbought": 70.0}


def test_given_a_dotted_path_in_settings_when_loading_user_strategies_then_it_is_registered(
    settings, clean_registry, btc_5m
):
    settings.TRADEBOT_STRATEGIES = [USER_PATH]
    assert "test_green_streak" not in available()
    load_configured_strategies()
    cls = get_strategy_class("test_green_streak")
    assert cls.__module__ == "tests.apps.bots.strategies.user_strategies"
    strategy = create_strategy("test_green_streak", {"streak": 4})
    sig = strategy.signals(btc_5m)
    assert (sig["action"] == 1).any() and (sig["action"] == -1).any()
    for t in range(0, 400):
        decided = strategy.process_data(btc_5m.iloc[: t + 1])
        assert decided.action == ACTION_LABELS[int(sig["action"].iat[t])]


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("NoDots", ValueError, "must be 'package.module.ClassName'"),
        ("tests.apps.bots.strategies.nope.Cls", ImportError, "cannot import 'tests.apps.bots.strategies.nope'"),
        ("tests.apps.bots.strategies.user_strategies.Missing", ImportError, "has no 'Missing'"),
        ("tests.apps.bots.strategies.user_strategies.NotAStrategy", TypeError, "must subclass"),
    ],
)
def test_given_a_bad_dotted_path_when_loading_then_a_clear_error(path, error, message, clean_registry):
    with pytest.raises(error, match=message):
        load_user_strategies([path])
    assert "test_not_a_strategy" not in available()
