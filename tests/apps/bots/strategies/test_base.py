"""BaseStrategy contract: parameter validation, Signal shape, the indicator cache, frame handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.bots.strategies.base import Action, BaseStrategy, Param, ParameterError, Signal
from apps.bots.strategies.registry import get_strategy_class


def sma_cross(params=None) -> BaseStrategy:
    return get_strategy_class("sma_cross")(params)


def test_given_no_parameters_when_created_then_every_default_is_filled_in():
    strategy = sma_cross()
    assert strategy.parameters == {"fast": 10, "slow": 50}
    assert strategy.param_space() == get_strategy_class("sma_cross").params


@pytest.mark.parametrize(
    ("given", "expected_message"),
    [
        ({"fast": 0}, "sma_cross: parameter 'fast' must be >= 1, got 0"),
        ({"fast": True}, "sma_cross: parameter 'fast' must be an integer, got True"),
        ({"fast": 10.5}, "sma_cross: parameter 'fast' must be an integer, got 10.5"),
        ({"fast": "10"}, "sma_cross: parameter 'fast' must be an integer, got '10'"),
        ({"fast": 60}, "sma_cross: parameter 'fast' must be < slow (50), got 60"),
        ({"fsat": 5}, "sma_cross: unknown parameter 'fsat' (expected: fast, slow)"),
    ],
)
def test_given_an_invalid_parameter_when_created_then_the_error_names_strategy_and_parameter(given, expected_message):
    with pytest.raises(ParameterError) as info:
        sma_cross(given)
    assert str(info.value) == expected_message
    assert info.value.strategy == "sma_cross"
    assert info.value.parameter == next(iter(given))


def test_given_an_integral_float_for_an_int_parameter_when_created_then_it_becomes_an_int():
    strategy = sma_cross({"fast": 10.0, "slow": np.int64(30)})
    assert strategy.parameters == {"fast": 10, "slow": 30}
    assert all(type(v) is int for v in strategy.parameters.values())


def test_given_float_and_choice_parameters_when_validated_then_types_bounds_and_choices_are_enforced():
    p_float = Param("k", float, 2.0, min=0.1, max=10.0)
    p_choice = Param("mode", str, "fast", choices=("fast", "slow"))
    p_bool = Param("short", bool, False)
    assert p_float.coerce(3, "demo") == 3.0 and type(p_float.coerce(3, "demo")) is float
    with pytest.raises(ParameterError, match=r"demo: parameter 'k' must be <= 10.0, got 11"):
        p_float.coerce(11, "demo")
    with pytest.raises(ParameterError, match=r"parameter 'k' must be a finite number"):
        p_float.coerce(math.nan, "demo")
    with pytest.raises(ParameterError, match=r"parameter 'k' must be a number, got True"):
        p_float.coerce(True, "demo")
    with pytest.raises(ParameterError, match=r"parameter 'mode' must be one of 'fast', 'slow', got 'medium'"):
        p_choice.coerce("medium", "demo")
    with pytest.raises(ParameterError, match=r"parameter 'short' must be true or false, got 1"):
        p_bool.coerce(1, "demo")


def test_given_command_line_strings_when_parsed_then_typed_values_or_a_named_error():
    cls = get_strategy_class("bollinger")
    assert cls.parse_parameters({"period": "30", "k": "2.5"}) == {"period": 30, "k": 2.5}
    assert cls(cls.parse_parameters({"period": "30.0"})).parameters["period"] == 30
    with pytest.raises(ParameterError, match=r"bollinger: parameter 'period' must be an integer, got 'abc'"):
        cls.parse_parameters({"period": "abc"})
    with pytest.raises(ParameterError, match=r"bollinger: unknown parameter 'width'"):
        cls.parse_parameters({"width": "3"})


def test_given_real_candles_when_process_data_then_the_signal_describes_the_last_candle(btc_1m):
    df = btc_1m.iloc[:500]
    signal = sma_cross().process_data(df)
    assert isinstance(signal, Signal)
    assert signal.timestamp == int(df["timestamp"].iloc[-1])
    assert signal.price == float(df["close"].iloc[-1])
    assert signal.action in ("buy", "sell", "hold")
    assert 0.0 <= signal.confidence <= 1.0
    expected_fast = df["close"].iloc[-10:].mean()
    assert signal.indicators["sma_fast"] == pytest.approx(expected_fast, rel=1e-12)
    assert set(signal.to_dict()) == {"action", "confidence", "indicators", "price", "timestamp"}


def test_given_fewer_candles_than_the_warmup_when_process_data_then_hold_with_undefined_indicators(btc_1m):
    signal = sma_cross().process_data(btc_1m.iloc[:20])
    assert signal.action == "hold" and signal.confidence == 0.0
    assert signal.indicators["sma_slow"] is None  # JSON-safe, not NaN
    assert signal.indicators["sma_fast"] is not None


def test_given_an_empty_frame_or_a_missing_column_when_deciding_then_a_clear_error(btc_1m):
    strategy = sma_cross()
    with pytest.raises(ValueError, match="sma_cross: process_data needs at least one candle"):
        strategy.process_data(btc_1m.iloc[:0])
    with pytest.raises(ValueError, match="missing column.*volume"):
        strategy.signals(btc_1m.drop(columns=["volume"]))


def test_given_a_sweep_sharing_a_cache_when_computed_then_each_window_is_computed_once_and_results_match(btc_5m):
    arrays = [btc_5m[c].to_numpy() for c in ("close", "high", "low", "open", "volume")]
    cache: dict = {}
    pairs = [(f, s) for f in (5, 10, 20) for s in (30, 50)]
    for fast, slow in pairs:
        strategy = sma_cross({"fast": fast, "slow": slow})
        with_cache = strategy.compute(*arrays, cache=cache)
        without = strategy.compute(*arrays)
        np.testing.assert_array_equal(with_cache.action, without.action)
        np.testing.assert_array_equal(with_cache.confidence, without.confidence)
    assert sorted(cache) == sorted(("sma", "close", n) for n in (5, 10, 20, 30, 50))
    fast_a = sma_cross({"fast": 5, "slow": 30}).compute(*arrays, cache=cache).indicators["sma_fast"]
    fast_b = sma_cross({"fast": 5, "slow": 50}).compute(*arrays, cache=cache).indicators["sma_fast"]
    assert fast_a is fast_b  # reused, not recomputed
    assert not fast_a.flags.writeable  # a shared array cannot be corrupted by one user


def test_given_actions_when_compared_then_the_enum_matches_the_contract():
    assert (Action.SELL, Action.HOLD, Action.BUY) == (-1, 0, 1)
    assert Action.BUY.label == "buy"


def test_given_an_int_parameter_without_a_max_when_given_1e30_then_refused_as_out_of_range():
    from apps.bots.strategies.base import Param, ParameterError

    unbounded = Param("n", int, 1, min=1)
    assert unbounded.coerce(2**53, "s") == 2**53
    with pytest.raises(ParameterError) as err:
        unbounded.coerce(1e30, "s")
    assert err.value.field == "parameters.n" and "2**53" in str(err.value)


def test_given_strategy_classes_when_the_sweep_asks_for_their_kernel_then_only_one_matching_its_compute_runs(btc_5m):
    from apps.bots.trading.fills import FillRules
    from apps.bots.trading.fused import run_actions

    sma = get_strategy_class("sma_cross")

    class Renamed(sma):  # same signals: the parent's kernel still applies
        name = "h7_renamed_sma_cross"

    class Filtered(sma):  # other signals below the kernel: the kernel must not be used
        name = "h7_filtered_sma_cross"

        def compute(self, *args, **kwargs):
            out = super().compute(*args, **kwargs)
            out.action[out.action == 1] = 0
            return out

    close, high, low = (btc_5m[c].to_numpy() for c in ("close", "high", "low"))
    open_, volume = btc_5m["open"].to_numpy(), btc_5m["volume"].to_numpy()
    args = (close, high, low, open_, volume, FillRules())
    params = {"fast": 5, "slow": 40}
    run = Renamed(params).run_sweep_kernel(*args)
    want = run_actions(close, open_, high, low, sma(params).compute(close, high, low, open_, volume).action, args[-1])
    assert run is not None and run.events.tobytes() == want.events.tobytes() and run.stats == want.stats
    assert Filtered(params).run_sweep_kernel(*args) is None
    assert get_strategy_class("rsi")({}).run_sweep_kernel(*args) is None  # BaseStrategy's default: no kernel
