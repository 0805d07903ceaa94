"""Every registered built-in, on real Binance candles: one logic in two forms, no lookahead, real trades, named errors.

Parametrized over the registry, so a new built-in is covered as soon as builtins.py imports it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.bots.strategies.base import ACTION_LABELS, BaseStrategy, ParameterError
from apps.bots.strategies.registry import available, get_strategy_class

BUILTINS = available()
WINDOW = 1500  # first candles checked one by one (covers every built-in's warm-up boundary)
SAMPLES = 150  # random later candles


def make(name: str) -> BaseStrategy:
    return get_strategy_class(name)()


def assert_same_decision(strategy: BaseStrategy, sig: pd.DataFrame, df: pd.DataFrame, t: int) -> None:
    decided = strategy.process_data(df.iloc[: t + 1])
    assert decided.action == ACTION_LABELS[int(sig["action"].iat[t])], (strategy.name, t)
    assert decided.confidence == sig["confidence"].iat[t], (strategy.name, t)
    assert decided.timestamp == int(df["timestamp"].iat[t])


def test_given_the_registry_then_all_required_builtins_are_there():
    assert {"sma_cross", "ema_cross", "rsi", "macd", "bollinger"} <= set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_given_real_candles_when_deciding_candle_by_candle_then_equal_to_the_vectorized_signals(name, btc_1m):
    strategy = make(name)
    assert strategy.warmup < WINDOW
    sig = strategy.signals(btc_1m)
    rng = np.random.default_rng(2023)
    later = rng.choice(np.arange(WINDOW, len(btc_1m)), SAMPLES, replace=False)
    for t in [*range(WINDOW), *sorted(later.tolist())]:
        assert_same_decision(strategy, sig, btc_1m, t)
    # the window really contained decisions, and nothing fired before the warm-up
    assert (sig["action"].iloc[: strategy.warmup] == 0).all()
    assert (sig["action"].iloc[:WINDOW] != 0).any()


@pytest.mark.parametrize("name", BUILTINS)
def test_given_other_parameters_when_deciding_candle_by_candle_then_still_equal(name, btc_5m):
    cls = get_strategy_class(name)
    # every numeric parameter moved away from its default, within its bounds
    params = {}
    for p in cls.params:
        if p.type is int:
            params[p.name] = p.default + 3 if p.name not in ("fast",) else max(p.min or 1, p.default - 2)
        elif p.type is float:
            params[p.name] = p.default * 0.9 if p.max is None or p.default * 0.9 <= p.max else p.default
    strategy = cls(params)
    sig = strategy.signals(btc_5m)
    for t in [*range(strategy.warmup - 3, strategy.warmup + 300), *range(len(btc_5m) - 200, len(btc_5m))]:
        assert_same_decision(strategy, sig, btc_5m, t)


@pytest.mark.parametrize("name", [n for n in BUILTINS if make(n).lookback is not None])
def test_given_a_window_strategy_when_the_history_starts_anywhere_then_the_decision_is_the_same(name, btc_1m):
    strategy = make(name)
    sig = strategy.signals(btc_1m)
    rng = np.random.default_rng(5)
    for t in rng.integers(strategy.lookback + 500, len(btc_1m), 100):
        for start in (t - strategy.lookback + 1, t - strategy.lookback - 37, int(rng.integers(0, t - 500))):
            assert_same_decision(strategy, sig.iloc[start:].reset_index(drop=True),
                                 btc_1m.iloc[start:].reset_index(drop=True), t - start)


@pytest.mark.parametrize("name", BUILTINS)
def test_given_the_future_replaced_when_computing_then_signals_up_to_t_are_unchanged(name, btc_5m):
    strategy = make(name)
    base = strategy.signals(btc_5m)
    rng = np.random.default_rng(11)
    for t in rng.integers(0, len(btc_5m) - 1, 25).tolist() + [strategy.warmup, strategy.warmup + 1]:
        future = btc_5m.iloc[t + 1:]
        shuffled = future.sample(frac=1.0, random_state=t).to_numpy(copy=True)
        shuffled[::3, 1:5] *= 3.7  # garbage prices on every third row
        tampered = btc_5m.copy()
        cols = ["timestamp", "open", "high", "low", "close", "volume"]
        tampered.loc[t + 1:, cols[1:]] = shuffled[:, 1:]
        changed = strategy.signals(tampered)
        pd.testing.assert_frame_equal(changed.iloc[: t + 1], base.iloc[: t + 1], check_exact=True)
        assert not np.array_equal(tampered["close"].to_numpy()[t + 1:], btc_5m["close"].to_numpy()[t + 1:])


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("data", ["btc_1m", "btc_5m", "eth_1h"])
def test_given_real_candles_when_computing_then_it_buys_and_sells(name, data, request):
    df = request.getfixturevalue(data)
    sig = make(name).signals(df)
    actions = sig["action"]
    assert actions.dtype == np.int8
    assert (actions == 1).sum() >= 1 and (actions == -1).sum() >= 1
    assert set(actions.unique()) <= {-1, 0, 1}
    conf = sig["confidence"]
    assert ((conf >= 0.5) & (conf <= 1.0))[actions != 0].all()
    assert (conf[actions == 0] == 0.0).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_given_invalid_parameters_when_created_then_the_error_names_strategy_and_parameter(name):
    cls = get_strategy_class(name)
    with pytest.raises(ParameterError, match=rf"^{name}: unknown parameter 'no_such_param'"):
        cls({"no_such_param": 1})
    for p in cls.params:
        if p.min is not None:
            bad = p.min - 1
            with pytest.raises(ParameterError, match=rf"^{name}: parameter '{p.name}' must be >= {p.min}, got {bad}"):
                cls({p.name: bad})
        if p.type in (int, float):
            with pytest.raises(ParameterError, match=rf"^{name}: parameter '{p.name}' must be .*, got True"):
                cls({p.name: True})
        if p.max is not None:
            with pytest.raises(ParameterError, match=rf"^{name}: parameter '{p.name}' must be <= {p.max}"):
                cls({p.name: p.max + 1})


@pytest.mark.parametrize("name", BUILTINS)
def test_given_a_decision_when_get_indicators_then_series_are_aligned_with_the_candles(name, btc_5m):
    strategy = make(name)
    sig = strategy.signals(btc_5m)
    series = strategy.get_indicators()
    assert series
    for key, s in series.items():
        assert s.index.equals(btc_5m.index)
        np.testing.assert_array_equal(s.to_numpy(), sig[key].to_numpy())
        assert s.iloc[strategy.warmup:].notna().all()

    t = 5000
    decided = strategy.process_data(btc_5m.iloc[: t + 1])
    series = strategy.get_indicators()
    assert set(series) == set(decided.indicators)
    for key, s in series.items():
        assert s.index[-1] == t and s.index.is_monotonic_increasing
        assert s.index.isin(btc_5m.index).all()
        assert s.iloc[-1] == decided.indicators[key] == sig[key].iat[t]


@pytest.mark.parametrize("name", ["sma_cross", "bollinger"])
def test_given_the_real_outage_flat_candles_when_computing_then_no_signal_from_float_noise(name, btc_1m):
    strategy = make(name)
    sig = strategy.signals(btc_1m)
    flat = (btc_1m["volume"] == 0) & (btc_1m["open"] == btc_1m["close"])
    # rows whose whole lookback window is identical flat candles (the 2023-03-24 Binance outage)
    n = strategy.lookback
    all_flat = flat.rolling(n).sum() == n
    same_price = btc_1m["close"].rolling(n).max() == btc_1m["close"].rolling(n).min()
    rows = all_flat & same_price
    assert rows.sum() >= 15
    assert (sig.loc[rows, "action"] == 0).all()
