"""The O(len) exact SMA and the fused crossover kernel, against plain independent references on real candles."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import Action, finish
from apps.bots.strategies.sma_cross import CROSS_TOLERANCE, cross_confidence, cross_signals


def fsum_means(x: np.ndarray, n: int) -> np.ndarray:
    """The definition: correctly rounded exact window sum (math.fsum), then / n."""
    out = np.full(len(x), np.nan)
    for t in range(n - 1, len(x)):
        out[t] = math.fsum(x[t - n + 1: t + 1]) / n
    return out


@pytest.mark.parametrize("n", [1, 3, 50, 240])
def test_given_real_closes_when_sma_then_each_value_is_the_correctly_rounded_window_sum_over_n(btc_1m, n):
    close = btc_1m["close"].to_numpy()[:6000]
    assert ind._limb_plan(close, n)[0] == "limbs"  # the fast path
    np.testing.assert_array_equal(ind.sma(close, n), fsum_means(close, n))


def test_given_values_at_a_rounding_tie_when_sma_then_the_sum_is_rounded_half_even_like_exact_fractions():
    x = np.array([1.0, 2.0**-53, 2.0**-106, -1.0, 3.0, 2.0**-52 + 2.0**-104] * 20)
    for n in (2, 3, 4):
        got = ind.sma(x, n)
        for t in range(n - 1, len(x)):
            assert got[t] == float(sum(Fraction(v) for v in x[t - n + 1: t + 1])) / n


def test_given_magnitudes_beyond_the_limb_range_when_sma_then_exact_partials_give_the_same_definition(btc_1m):
    close = btc_1m["close"].to_numpy()[:3000].copy()
    close[::7] *= 1e-40  # 130+ binades apart: the limb path cannot hold them
    assert ind._limb_plan(close, 20)[0] == "msum"
    full = ind.sma(close, 20)
    np.testing.assert_array_equal(full, fsum_means(close, 20))
    for t in (25, 1000, 2999):
        assert ind.sma(close[t - 19: t + 1], 20)[-1] == full[t]  # still start-independent


def test_given_nan_and_infinities_in_windows_when_sma_then_ieee_sums_and_clean_windows_stay_exact(btc_1m):
    close = btc_1m["close"].to_numpy()[:300].copy()
    close[50], close[120], close[125], close[200] = np.nan, np.inf, -np.inf, np.inf
    got = ind.sma(close, 10)
    with np.errstate(invalid="ignore"):
        for t in range(9, 300):
            window = close[t - 9: t + 1]
            expected = math.fsum(window) / 10 if np.isfinite(window).all() else np.sum(window) / 10
            assert got[t] == expected or (np.isnan(got[t]) and np.isnan(expected))
    assert np.isnan(got[55]) and got[122] == np.inf and np.isnan(got[126]) and got[205] == np.inf


def test_given_several_windows_when_window_means_then_each_equals_its_own_sma(btc_5m):
    close = btc_5m["close"].to_numpy()
    windows = [5, 60, 240]
    for n, values in zip(windows, ind.window_means(close, windows), strict=True):
        assert values.tobytes() == ind.sma(close, n).tobytes()


def composed(fast: np.ndarray, slow: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """The unfused definition: crossed_above/below with the relative tolerance, cross_confidence, finish."""
    tol = np.abs(slow) * CROSS_TOLERANCE
    action = np.where(ind.crossed_above(fast, slow, tol), Action.BUY,
                      np.where(ind.crossed_below(fast, slow, tol), Action.SELL, Action.HOLD))
    return finish(action, cross_confidence(fast, slow), np.arange(len(fast)) >= warmup)


@pytest.mark.parametrize(("fast_n", "slow_n"), [(1, 2), (10, 50), (20, 200)])
def test_given_real_lines_when_cross_signals_then_bit_identical_to_the_composed_numpy_rule(btc_1m, fast_n, slow_n):
    close = btc_1m["close"].to_numpy()
    for fast, slow in ((ind.sma(close, fast_n), ind.sma(close, slow_n)),
                       (ind.ema(close, fast_n), ind.ema(close, slow_n))):
        for warmup in (0, slow_n):
            act, conf = cross_signals(fast, slow, warmup)
            ref_act, ref_conf = composed(fast, slow, warmup)
            assert act.dtype == np.int8 and np.array_equal(act, ref_act)
            assert conf.tobytes() == ref_conf.tobytes()
            assert (act == 1).sum() > 10 and (act == -1).sum() > 10


def test_given_zero_and_nan_lines_when_cross_signals_then_no_error_and_the_composed_values():
    fast = np.array([np.nan, 1, 1, 2, 0, 0, -1, 1, np.inf, 0])
    slow = np.array([1, 1, 0, 0, 0, 1, 0, np.nan, 1, 0.0])
    with np.errstate(all="ignore"):
        ref_act, ref_conf = composed(fast, slow, 0)
    act, conf = cross_signals(fast, slow, 0)
    assert act.tolist() == ref_act.tolist() == [0, 0, 1, 0, 0, -1, 0, 0, 0, 0]
    assert conf.tobytes() == ref_conf.tobytes()
