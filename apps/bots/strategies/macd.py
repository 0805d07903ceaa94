"""MACD line / signal line crossover (momentum)."""

from __future__ import annotations

from typing import Any

import numpy as np

from apps.bots.strategies import indicators as ind
from apps.bots.strategies.base import MAX_WINDOW, Action, BaseStrategy, IndicatorCache, Param, StrategyOutput, finish
from apps.bots.strategies.registry import register

#: MACD and signal closer than this fraction of the close count as equal (float noise).
CROSS_TOLERANCE = 1e-9
#: |histogram| / close at which a cross gets full confidence.
FULL_CONFIDENCE_HIST = 0.001


@register
class Macd(BaseStrategy):
    """Buy/sell on the MACD line crossing its signal line.

    MACD = EMA(fast) - EMA(slow) of closes, signal = EMA(signal) of MACD, hist = MACD - signal (EMAs as in ema_cross,
    seeded with the first value: recursive, process_data uses the whole frame it is given).
    Exact rule, for candle t >= slow + signal (warm-up):
    - buy  when MACD[t] > signal[t] and MACD[t-1] <= signal[t-1];
    - sell when MACD[t] < signal[t] and MACD[t-1] >= signal[t-1];
    ">" means "by more than 1e-9 x close[t]". Confidence: 0.5 + 0.5 * min(1, |hist[t]| / close[t] / 0.001); hold = 0.
    """

    name = "macd"
    params = (
        Param("fast", int, 12, min=1, max=MAX_WINDOW, help="fast EMA span"),
        Param("slow", int, 26, min=2, max=MAX_WINDOW, help="slow EMA span, > fast"),
        Param("signal", int, 9, min=1, max=MAX_WINDOW, help="signal-line EMA span"),
    )

    def validate(self, params: dict[str, Any]) -> None:
        if params["fast"] >= params["slow"]:
            raise self.error("fast", f"parameter 'fast' must be < slow ({params['slow']}), got {params['fast']}")

    @property
    def warmup(self) -> int:
        return int(self.parameters["slow"]) + int(self.parameters["signal"])

    @property
    def startup_candles(self) -> int:
        """Start-up for the slow EMA and then the signal EMA to forget their seeds (check_strategy measures ~319 at
        12/26/9 on ETH 1h)."""
        slow, sig = int(self.parameters["slow"]), int(self.parameters["signal"])
        return ind.recursive_startup(2.0 / (slow + 1)) + ind.recursive_startup(2.0 / (sig + 1)) + slow + sig

    def compute(self, close, high, low, open_, volume, *, cache: IndicatorCache | None = None) -> StrategyOutput:
        fast_n, slow_n, sig_n = self.parameters["fast"], self.parameters["slow"], self.parameters["signal"]
        fast = self.cached(cache, ("ema", "close", fast_n), lambda: ind.ema(close, fast_n))
        slow = self.cached(cache, ("ema", "close", slow_n), lambda: ind.ema(close, slow_n))
        line = self.cached(cache, ("macd_line", "close", fast_n, slow_n), lambda: fast - slow)
        sig = self.cached(cache, ("macd_signal", "close", fast_n, slow_n, sig_n), lambda: ind.ema(line, sig_n))
        hist = line - sig
        tol = np.abs(np.asarray(close, dtype=np.float64)) * CROSS_TOLERANCE
        action = np.where(ind.crossed_above(line, sig, tol), Action.BUY,
                          np.where(ind.crossed_below(line, sig, tol), Action.SELL, Action.HOLD))
        with np.errstate(divide="ignore", invalid="ignore"):
            confidence = 0.5 + 0.5 * np.minimum(1.0, np.abs(hist) / np.abs(close) / FULL_CONFIDENCE_HIST)
        act, conf = finish(action, confidence, self.warmup_mask(len(close)))
        return StrategyOutput(act, conf, {"macd": line, "macd_signal": sig, "macd_hist": hist})
