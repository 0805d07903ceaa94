"""Simple moving-average crossover (trend following)."""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import Action, BaseStrategy, IndicatorCache, Param, StrategyOutput, finish
from apps.bots.strategies.registry import register

#: Lines closer than this fraction of the slow line count as equal (float noise, not a cross).
CROSS_TOLERANCE = 1e-9
#: Relative line separation at which a cross gets full confidence.
FULL_CONFIDENCE_SPREAD = 0.005


def cross_confidence(fast: np.ndarray, slow: np.ndarray) -> np.ndarray:
    """0.5 + 0.5 * min(1, |fast - slow| / slow / 0.005): 0.5 for a bare cross, 1.0 once the lines are 0.5 % apart."""
    spread = np.abs(fast - slow) / np.abs(slow)
    return 0.5 + 0.5 * np.minimum(1.0, spread / FULL_CONFIDENCE_SPREAD)


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
        fast = self.cached(cache, ("sma", "close", fast_n), lambda: ind.sma(close, fast_n))
        slow = self.cached(cache, ("sma", "close", slow_n), lambda: ind.sma(close, slow_n))
        tol = np.abs(slow) * CROSS_TOLERANCE
        action = np.where(ind.crossed_above(fast, slow, tol), Action.BUY,
                          np.where(ind.crossed_below(fast, slow, tol), Action.SELL, Action.HOLD))
        act, conf = finish(action, cross_confidence(fast, slow), self.warmup_mask(len(close)))
        return StrategyOutput(act, conf, {"sma_fast": fast, "sma_slow": slow})
