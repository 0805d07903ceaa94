"""Simple moving-average crossover (trend following)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import BaseStrategy, IndicatorCache, Param, StrategyOutput
from apps.bots.strategies.registry import register

#: Lines closer than this fraction of the slow line count as equal (float noise, not a cross).
CROSS_TOLERANCE = 1e-9
#: Relative line separation at which a cross gets full confidence.
FULL_CONFIDENCE_SPREAD = 0.005


def cross_confidence(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """0.5 + 0.5 * min(1, |fast - slow| / slow / 0.005): 0.5 for a bare cross, 1.0 once the lines are 0.5 % apart."""
    spread = np.abs(fast - slow) / np.abs(slow)
    return 0.5 + 0.5 * np.minimum(1.0, spread / FULL_CONFIDENCE_SPREAD)


@njit(cache=True)
def _cross_signal(f0, s0, f1, s1, tol_rel):
    """The crossover decision at t from the lines at t-1 (f0, s0) and t (f1, s1): 1 buy, -1 sell, 0 hold.

    Exactly `crossed_above` / `crossed_below` with tol = |slow| * tol_rel (NaN compares false: never a cross)."""
    d1 = f1 - s1
    t1 = abs(s1) * tol_rel
    if d1 > t1:
        return 1 if f0 - s0 <= abs(s0) * tol_rel else 0
    if d1 < -t1:
        return -1 if f0 - s0 >= -(abs(s0) * tol_rel) else 0
    return 0


@njit(cache=True, error_model="numpy")
def _confidence(f, s):
    """`cross_confidence` at one row, then `finish`'s NaN -> 0.5 and clip to [0, 1] (same operations, same bits)."""
    c = 0.5 + 0.5 * min(1.0, (abs(f - s) / abs(s)) / FULL_CONFIDENCE_SPREAD)
    if c != c:
        return 0.5
    return min(max(c, 0.0), 1.0)


@njit(cache=True, error_model="numpy")
def _cross_kernel(fast, slow, warmup, tol_rel):
    """One pass: crossover with the relative tolerance, warm-up, confidence (0 on holds). int8 actions."""
    n = fast.shape[0]
    action = np.zeros(n, np.int8)
    conf = np.zeros(n, np.float64)
    for t in range(max(warmup, 1), n):
        a = _cross_signal(fast[t - 1], slow[t - 1], fast[t], slow[t], tol_rel)
        if a != 0:
            action[t] = a
            conf[t] = _confidence(fast[t], slow[t])
    return action, conf


def cross_signals(fast: np.ndarray, slow: np.ndarray, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """(action int8, confidence) of a two-line crossover: buy when fast rises above slow by more than
    CROSS_TOLERANCE x |slow|, sell when it falls below by more, none before row `warmup`; the values of
    crossed_above/crossed_below + cross_confidence + finish, fused into one compiled pass."""
    return _cross_kernel(np.ascontiguousarray(fast, dtype=np.float64), np.ascontiguousarray(slow, dtype=np.float64),
                         int(warmup), CROSS_TOLERANCE)


@register
class SmaCross(BaseStrategy):
    """Buy/sell on SMA(fast) crossing SMA(slow).

    Exact rule, for candle t (SMA(n)[t] = plain mean of close[t-n+1..t], undefined for t < n-1):
    - buy  when SMA(fast)[t] > SMA(slow)[t] and SMA(fast)[t-1] <= SMA(slow)[t-1];
    - sell when SMA(fast)[t] < SMA(slow)[t] and SMA(fast)[t-1] >= SMA(slow)[t-1];
    - otherwise hold. ">" means "by more than 1e-9 x SMA(slow)" (closer lines are equal: float noise).
    The first possible signal is at t = slow (it needs both SMAs at t-1): warmup = slow, lookback = slow + 1 rows.
    Confidence: 0.5 + 0.5 * min(1, |SMA(fast) - SMA(slow)| / SMA(slow) / 0.005); hold = 0.
    """

    name = "sma_cross"
    params = (
        Param("fast", int, 10, min=1, help="fast SMA window (candles)"),
        Param("slow", int, 50, min=2, help="slow SMA window (candles), > fast"),
    )

    def validate(self, params: dict[str, Any]) -> None:
        if params["fast"] >= params["slow"]:
            raise self.error("fast", f"parameter 'fast' must be < slow ({params['slow']}), got {params['fast']}")

    @property
    def warmup(self) -> int:
        return int(self.parameters["slow"])

    @property
    def lookback(self) -> int:
        return int(self.parameters["slow"]) + 1

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        fast_n, slow_n = self.parameters["fast"], self.parameters["slow"]
        fast_key, slow_key = ("sma", "close", fast_n), ("sma", "close", slow_n)
        if cache is None or (fast_key not in cache and slow_key not in cache):
            both = ind.window_means(close, [fast_n, slow_n])  # one scan of the closes for both lines
            fast = self.cached(cache, fast_key, lambda: both[0])
            slow = self.cached(cache, slow_key, lambda: both[1])
        else:
            fast = self.cached(cache, fast_key, lambda: ind.sma(close, fast_n))
            slow = self.cached(cache, slow_key, lambda: ind.sma(close, slow_n))
        act, conf = cross_signals(fast, slow, self.warmup)
        return StrategyOutput(act, conf, {"sma_fast": fast, "sma_slow": slow})
