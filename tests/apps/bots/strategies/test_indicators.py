"""Indicators on real BTC/USDT closes, against independent pandas/numpy formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from apps.bots.strategies import indicators as ind


@pytest.fixture(scope="module")
def close(btc_1m) -> np.ndarray:
    return btc_1m["close"].to_numpy()


@pytest.mark.parametrize("n", [1, 2, 7, 10, 50, 200])
def test_given_real_closes_when_sma_then_plain_window_means_with_nan_warmup(close, n):
    got = ind.sma(close, n)
    expected = sliding_window_view(close, n).mean(axis=1)
    assert np.isnan(got[: n - 1]).all()
    np.testing.assert_allclose(got[n - 1:], expected, rtol=1e-13, atol=0)


def test_given_any_start_when_sma_then_the_value_at_t_is_bit_identical_to_the_full_series(close):
    full = ind.sma(close, 50)
    rng = np.random.default_rng(7)
    for t in rng.integers(60, len(close), 50):
        for start in (t - 49, t - 120, int(rng.integers(0, t - 49))):
            assert ind.sma(close[start: t + 1], 50)[-1] == full[t]


def test_given_real_closes_when_rolling_std_and_bollinger_then_population_std_bands(close):
    lower, mid, upper = ind.bollinger(close, 20, 2.5)
    windows = sliding_window_view(close, 20)
    std = windows.std(axis=1)  # numpy default ddof=0
    np.testing.assert_allclose(mid[19:], windows.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(upper[19:] - mid[19:], 2.5 * std, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mid[19:] - lower[19:], 2.5 * std, rtol=1e-6, atol=1e-9)
    assert np.isnan(lower[:19]).all()


@pytest.mark.parametrize("n", [2, 12, 26])
def test_given_real_closes_when_ema_then_equals_pandas_ewm_without_adjustment(close, n):
    expected = pd.Series(close).ewm(span=n, adjust=False).mean().to_numpy()
    got = ind.ema(close, n)
    assert got[0] == close[0]  # seeded with the first value
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_given_a_prefix_when_ema_then_prefix_values_are_bit_identical(close):
    full = ind.ema(close, 26)
    for t in (0, 1, 25, 26, 1000, 40_000):
        np.testing.assert_array_equal(ind.ema(close[: t + 1], 26), full[: t + 1])


def test_given_real_closes_when_rsi_then_equals_an_independent_wilder_formula(close):
    period = 14
    diff = np.diff(close)
    gains, losses = np.clip(diff, 0, None), np.clip(-diff, 0, None)
    avg_g, avg_l = gains[:period].mean(), losses[:period].mean()
    expected = [np.nan] * period + [100 - 100 / (1 + avg_g / avg_l)]
    for g, lo in zip(gains[period:5000], losses[period:5000], strict=True):
        avg_g = (avg_g * (period - 1) + g) / period
        avg_l = (avg_l * (period - 1) + lo) / period
        expected.append(100 - 100 / (1 + avg_g / avg_l))
    got = ind.rsi(close, period)
    np.testing.assert_allclose(got[: len(expected)], np.array(expected), rtol=1e-10)
    assert np.nanmin(got) >= 0 and np.nanmax(got) <= 100


def test_given_no_moves_or_no_losses_when_rsi_then_50_and_100():
    assert ind.rsi(np.full(20, 5.0), 14)[-1] == 50.0
    assert ind.rsi(np.arange(20, dtype=float), 14)[-1] == 100.0


def test_given_real_closes_when_macd_then_line_signal_and_histogram_agree_with_pandas(close):
    s = pd.Series(close)
    line_exp = s.ewm(span=12, adjust=False).mean() - s.ewm(span=26, adjust=False).mean()
    sig_exp = line_exp.ewm(span=9, adjust=False).mean()
    line, sig, hist = ind.macd(close, 12, 26, 9)
    np.testing.assert_allclose(line, line_exp.to_numpy(), atol=1e-7)
    np.testing.assert_allclose(sig, sig_exp.to_numpy(), atol=1e-7)
    np.testing.assert_array_equal(hist, line - sig)


def test_given_two_lines_when_crossing_then_only_the_crossing_rows_are_flagged():
    a = np.array([1.0, 2.0, 3.0, 3.0, 1.0, np.nan, 5.0])
    b = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0])
    assert ind.crossed_above(a, b).tolist() == [False, False, True, False, False, False, False]
    assert ind.crossed_below(a, b).tolist() == [False, False, False, False, True, False, False]
    # within tolerance the lines are equal: no cross from float noise
    assert not ind.crossed_above(b + 1e-12, b, tol=1e-9).any()


def test_given_a_bad_window_when_computing_then_a_clear_error(close):
    with pytest.raises(ValueError, match="sma: window must be a positive integer, got 0"):
        ind.sma(close, 0)
