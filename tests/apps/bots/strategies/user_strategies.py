"""A user strategy living outside apps/, registered only by dotted path (settings.TRADEBOT_STRATEGIES)."""

from __future__ import annotations

import numpy as np

from apps.bots.strategies.base import BaseStrategy, Param, StrategyOutput, finish


class CloseAboveOpenStreak(BaseStrategy):
    """Buy after `streak` green candles in a row, sell after `streak` red ones (window of `streak` rows)."""

    name = "test_green_streak"
    params = (Param("streak", int, 3, min=1, max=50),)

    @property
    def warmup(self) -> int:
        return int(self.parameters["streak"]) - 1

    @property
    def lookback(self) -> int:
        return int(self.parameters["streak"])

    def compute(self, close, high, low, open_, volume, *, cache=None) -> StrategyOutput:
        n = self.parameters["streak"]
        green = (close > open_).astype(np.float64)
        red = (close < open_).astype(np.float64)
        kernel = np.ones(n)
        greens = np.convolve(green, kernel)[: len(close)]
        reds = np.convolve(red, kernel)[: len(close)]
        action = np.where(greens == n, 1, np.where(reds == n, -1, 0))
        act, conf = finish(action, np.ones(len(close)), self.warmup_mask(len(close)))
        return StrategyOutput(act, conf, {"green_count": greens})


class NotAStrategy:
    name = "test_not_a_strategy"
