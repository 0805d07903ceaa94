"""Bollinger-band mean reversion: buy the close back inside from below, sell it back inside from above."""

from __future__ import annotations

import numpy as np

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import MAX_WINDOW, Action, BaseStrategy, IndicatorCache, Param, StrategyOutput, finish
from apps.bots.strategies.registry import register

#: Differences smaller than this fraction of the close count as zero (float noise on flat stretches).
TOLERANCE = 1e-9


@register
class Bollinger(BaseStrategy):
    """Band re-entry.

    Bands: mid = SMA(period) of closes, lower/upper = mid -/+ k * population std (ddof=0) over the same window
    (window-only values: process_data needs just the last period + 1 rows). First possible signal at t = period.
    Exact rule, for candle t:
    - buy  when close[t-1] < lower[t-1] and close[t] >= lower[t] (re-entry from below);
    - sell when close[t-1] > upper[t-1] and close[t] <= upper[t] (re-entry from above);
    - otherwise hold. "<"/">" mean "by more than 1e-9 x close" (a flat stretch sits ON its bands, not outside).
    Confidence: 0.5 + 0.5 * min(1, 4 * depth), depth = how far close[t-1] was outside the band, in band widths
    (upper - lower) at t-1; hold = 0.
    """

    name = "bollinger"
    params = (
        Param("period", int, 20, min=2, max=MAX_WINDOW, help="SMA / std window (candles)"),
        Param("k", float, 2.0, min=0.1, max=10.0, help="band width in standard deviations"),
    )

    @property
    def warmup(self) -> int:
        return int(self.parameters["period"])

    @property
    def lookback(self) -> int:
        return int(self.parameters["period"]) + 1

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        period, k = self.parameters["period"], self.parameters["k"]
        close = np.asarray(close, dtype=np.float64)
        mid = self.cached(cache, ("sma", "close", period), lambda: ind.sma(close, period))
        std = self.cached(cache, ("std", "close", period), lambda: ind.rolling_std(close, period, mean=mid))
        lower = mid - k * std
        upper = mid + k * std
        tol = np.abs(close) * TOLERANCE
        below = close - lower  # < -tol: outside below
        above = close - upper  # > tol: outside above
        buy = np.zeros(len(close), dtype=bool)
        sell = np.zeros(len(close), dtype=bool)
        buy[1:] = (below[:-1] < -tol[:-1]) & (below[1:] >= -tol[1:])
        sell[1:] = (above[:-1] > tol[:-1]) & (above[1:] <= tol[1:])
        width = upper - lower
        depth = np.full(len(close), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth[1:] = np.where(buy[1:], -below[:-1], above[:-1]) / width[:-1]
        confidence = 0.5 + 0.5 * np.minimum(1.0, 4.0 * depth)
        action = np.where(buy, Action.BUY, np.where(sell, Action.SELL, Action.HOLD))
        act, conf = finish(action, confidence, self.warmup_mask(len(close)))
        return StrategyOutput(act, conf, {"bb_lower": lower, "bb_mid": mid, "bb_upper": upper})
