"""Exponential moving-average crossover (trend following, faster to react than SMA)."""

from __future__ import annotations

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import MAX_WINDOW, IndicatorCache, Param, StrategyOutput
from apps.bots.strategies.registry import register
from apps.bots.strategies.sma_cross import LineCross, cross_signals


@register
class EmaCross(LineCross):
    """Buy/sell on EMA(fast) crossing EMA(slow).

    EMA(n): alpha = 2/(n+1), adjust=False, seeded with the first close of the frame (recursive: the value at t uses
    every close <= t, so process_data computes over the whole frame it is given, O(len) compiled).
    Exact rule, for candle t >= slow (warm-up: no signal before the slow EMA has seen `slow` closes):
    - buy  when EMA(fast)[t] > EMA(slow)[t] and EMA(fast)[t-1] <= EMA(slow)[t-1];
    - sell when EMA(fast)[t] < EMA(slow)[t] and EMA(fast)[t-1] >= EMA(slow)[t-1];
    ">" means "by more than 1e-9 x EMA(slow)". Confidence: 0.5 + 0.5 * min(1, |EMA(fast) - EMA(slow)| / EMA(slow) /
    0.005); hold = 0.
    """

    name = "ema_cross"
    params = (
        Param("fast", int, 12, min=1, max=MAX_WINDOW, help="fast EMA span (candles)"),
        Param("slow", int, 26, min=2, max=MAX_WINDOW, help="slow EMA span (candles), > fast"),
    )

    @property
    def startup_candles(self) -> int:
        """Start-up for the slow EMA to forget its seed (measured by check_strategy: ~214 at 12/26, declared 385)."""
        return ind.recursive_startup(2.0 / (int(self.parameters["slow"]) + 1)) + int(self.parameters["slow"])

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        fast_n, slow_n = self.parameters["fast"], self.parameters["slow"]
        fast = self.cached(cache, ("ema", "close", fast_n), lambda: ind.ema(close, fast_n))
        slow = self.cached(cache, ("ema", "close", slow_n), lambda: ind.ema(close, slow_n))
        act, conf = cross_signals(fast, slow, self.warmup)
        return StrategyOutput(act, conf, {"ema_fast": fast, "ema_slow": slow})
