"""sma_cross against a plain, independently written reference of its documented rule, on real candles."""

from __future__ import annotations

import numpy as np
import pytest

from apps.bots.strategies.registry import get_strategy_class


def reference_sma_cross(close: list[float], fast: int, slow: int) -> list[int]:
    """The docstring rule, written naively: means by math over Python lists, decisions in a loop."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    actions = [0] * len(close)
    prev_diff = None
    for t in range(len(close)):
        if t + 1 < slow:
            continue
        f = mean(close[t - fast + 1: t + 1])
        s = mean(close[t - slow + 1: t + 1])
        tol = abs(s) * 1e-9  # "lines closer than 1e-9 of SMA(slow) are equal"
        diff = f - s
        if prev_diff is not None:
            prev_f_gt = prev_diff[0] > prev_diff[1]
            prev_f_lt = prev_diff[0] < -prev_diff[1]
            if diff > tol and not prev_f_gt:
                actions[t] = 1
            elif diff < -tol and not prev_f_lt:
                actions[t] = -1
        prev_diff = (diff, tol)
    return actions


@pytest.mark.parametrize(("fast", "slow"), [(10, 50), (3, 7), (20, 200)])
def test_given_real_candles_when_sma_cross_then_equal_to_the_hand_written_rule(btc_1m, fast, slow):
    df = btc_1m.iloc[:20_000]
    expected = reference_sma_cross(df["close"].tolist(), fast, slow)
    got = get_strategy_class("sma_cross")({"fast": fast, "slow": slow}).signals(df)["action"]
    assert got.tolist() == expected
    assert expected.count(1) > 10 and expected.count(-1) > 10


def test_given_the_first_possible_candle_when_deciding_then_it_is_index_slow(btc_1m):
    strategy = get_strategy_class("sma_cross")({"fast": 2, "slow": 3})
    assert strategy.warmup == 3 and strategy.lookback == 4
    close = btc_1m["close"].to_numpy()
    sig = strategy.signals(btc_1m.iloc[:200])
    fast = np.array([close[t - 1: t + 1].mean() for t in range(1, 200)])
    slow = np.array([close[t - 2: t + 1].mean() if t >= 2 else np.nan for t in range(1, 200)])
    assert (sig["action"].iloc[:3] == 0).all()
    assert np.isnan(sig["sma_slow"].iloc[1]) and not np.isnan(sig["sma_slow"].iloc[2])
    np.testing.assert_allclose(sig["sma_fast"].iloc[1:].to_numpy(), fast, rtol=1e-14)
    np.testing.assert_allclose(sig["sma_slow"].iloc[2:].to_numpy(), slow[1:], rtol=1e-14)


def test_given_a_cross_when_confidence_then_it_follows_the_documented_formula(btc_1m):
    sig = get_strategy_class("sma_cross")().signals(btc_1m)
    acted = sig[sig["action"] != 0]
    spread = (acted["sma_fast"] - acted["sma_slow"]).abs() / acted["sma_slow"]
    expected = 0.5 + 0.5 * np.minimum(1.0, spread / 0.005)
    np.testing.assert_allclose(acted["confidence"].to_numpy(), expected.to_numpy(), rtol=1e-12)
