"""Every domain error is an ApplicationError carrying the field, and survives a process boundary (pickle)."""

from __future__ import annotations

import pickle

import pytest

from apps.backtest.engine.space import SweepSpaceError
from apps.backtest.engine.walkforward import WalkForwardError
from apps.bots.config import BotConfigError, parse_config
from apps.bots.strategies.base import ParameterError
from apps.bots.strategies.registry import UnknownStrategyError, create_strategy
from apps.bots.trading.fills import FillRules
from apps.common.errors import ApplicationError
from apps.market.csvio import CsvFormatError
from apps.market.providers.base import ProviderError
from apps.market.providers.registry import UnknownProviderError, get_provider
from apps.market.timeframes import TimeframeError, timeframe_ms


@pytest.mark.parametrize("cls", [BotConfigError, ParameterError, UnknownStrategyError, SweepSpaceError,
                                 WalkForwardError, TimeframeError, CsvFormatError, ProviderError,
                                 UnknownProviderError])
def test_given_a_domain_error_class_then_it_is_an_application_error(cls):
    assert issubclass(cls, ApplicationError) and issubclass(cls, ValueError)


@pytest.mark.parametrize(("call", "field"), [
    (lambda: create_strategy("nope"), "strategy"),
    (lambda: create_strategy("sma_cross", {"fast": 1e30}), "parameters.fast"),
    (lambda: create_strategy("sma_cross", {"fast": 60, "slow": 50}), "parameters.fast"),
    (lambda: timeframe_ms("7m"), "timeframe"),
    (lambda: get_provider("nonexistent"), "provider"),
    (lambda: FillRules(stop_loss=2.0), "stop_loss"),
    (lambda: parse_config({"name": "x", "strategy": "rsi", "exchange": "binance", "symbol": "BTC/USDT",
                           "timeframe": "1h", "fee_rate": 5}), "fee_rate"),
    (lambda: parse_config({"name": "x", "strategy": "rsi", "parameters": {"period": 0}, "exchange": "binance",
                           "symbol": "BTC/USDT", "timeframe": "1h"}), "parameters.period"),
])
def test_given_bad_input_when_a_rule_refuses_it_then_the_error_names_the_field_and_pickles_intact(call, field):
    with pytest.raises(ApplicationError) as err:
        call()
    assert err.value.field == field

    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is type(err.value)
    assert (str(copy), copy.field, copy.extra) == (str(err.value), field, err.value.extra)
