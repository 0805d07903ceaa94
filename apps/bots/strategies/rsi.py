"""RSI mean reversion: buy the recovery from oversold, sell the fall back from overbought."""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import MAX_WINDOW, Action, BaseStrategy, IndicatorCache, Param, StrategyOutput, finish
from apps.bots.strategies.registry import register


@register
class Rsi(BaseStrategy):
    """Wilder RSI(period) threshold crossings.

    RSI: Wilder smoothing seeded with the mean of the first `period` close-to-close changes (recursive: process_data
    uses the whole frame it is given). Defined from row `period`; first possible signal at t = period + 1.
    Exact rule, for candle t:
    - buy  when RSI[t-1] <= oversold and RSI[t] > oversold (crosses up through oversold);
    - sell when RSI[t-1] >= overbought and RSI[t] < overbought (crosses down through overbought);
    - otherwise hold.
    Confidence: buy 0.5 + 0.5 * (oversold - RSI[t-1]) / oversold, sell 0.5 + 0.5 * (RSI[t-1] - overbought) /
    (100 - overbought), i.e. deeper excursions before the turn are stronger; hold = 0.
    """

    name = "rsi"
    params = (
        Param("period", int, 14, min=2, max=MAX_WINDOW, help="RSI period (candles)"),
        Param("oversold", float, 30.0, min=0.0, max=100.0, help="buy when RSI rises through this level"),
        Param("overbought", float, 70.0, min=0.0, max=100.0, help="sell when RSI falls through this level"),
    )

    def validate(self, params: dict[str, Any]) -> None:
        if params["oversold"] >= params["overbought"]:
            raise self.error(
                "oversold",
                f"parameter 'oversold' must be < overbought ({params['overbought']}), got {params['oversold']}",
            )

    @property
    def warmup(self) -> int:
        return int(self.parameters["period"]) + 1

    @property
    def startup_candles(self) -> int:
        """Start-up for Wilder's smoothing (alpha = 1/period) to forget its seed (check_strategy: ~261 at 14)."""
        period = int(self.parameters["period"])
        return ind.recursive_startup(1.0 / period) + period + 1

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        period = self.parameters["period"]
        low_level, high_level = self.parameters["oversold"], self.parameters["overbought"]
        value = self.cached(cache, ("rsi", "close", period), lambda: ind.rsi(close, period))
        buy = ind.crossed_above(value, np.full_like(value, low_level))
        sell = ind.crossed_below(value, np.full_like(value, high_level))
        prev = np.empty_like(value)
        prev[0] = np.nan
        prev[1:] = value[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            buy_conf = 0.5 + 0.5 * (low_level - prev) / low_level if low_level > 0 else np.full_like(prev, 0.5)
            sell_conf = (0.5 + 0.5 * (prev - high_level) / (100.0 - high_level) if high_level < 100
                         else np.full_like(prev, 0.5))
        action = np.where(buy, Action.BUY, np.where(sell, Action.SELL, Action.HOLD))
        confidence = np.where(buy, buy_conf, np.where(sell, sell_conf, 0.0))
        act, conf = finish(action, confidence, self.warmup_mask(len(close)))
        return StrategyOutput(act, conf, {"rsi": value})
