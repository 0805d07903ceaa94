"""One strategy (a Donchian breakout) written in the three forms users write, plus a populate strategy with a
deliberate lookahead bug (`shift(-1)`): test subjects for the strategy forms and `check_strategy`.

Rule (n = `window`): upper[t] = max(high[t-n..t-1]), lower[t] = min(low[t-n..t-1]) (the n candles BEFORE t);
buy when close[t] > upper[t], sell when close[t] < lower[t]. Max/min are exact in every form, so all three forms make
the same signals bit for bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from apps.bots.strategies import BaseStrategy, Param, Signal, StrategyOutput, finish

PARAMS = (Param("window", int, 20, min=2, max=500, help="channel length (candles)"),)


class _Breakout(BaseStrategy):
    """What every form shares: the parameter, the first possible signal (row `window`) and the rows it reads."""

    params = PARAMS

    @property
    def warmup(self) -> int:
        return int(self.parameters["window"])

    @property
    def lookback(self) -> int:
        return int(self.parameters["window"]) + 1


class BreakoutCompute(_Breakout):
    name = "test_breakout_compute"

    def compute(self, close, high, low, open_, volume, *, cache=None) -> StrategyOutput:
        n = self.parameters["window"]
        rows = len(close)
        upper = np.full(rows, np.nan)
        lower = np.full(rows, np.nan)
        if rows > n:
            upper[n:] = np.lib.stride_tricks.sliding_window_view(high, n).max(axis=1)[:-1]
            lower[n:] = np.lib.stride_tricks.sliding_window_view(low, n).min(axis=1)[:-1]
        with np.errstate(invalid="ignore"):
            action = np.where(close > upper, 1, np.where(close < lower, -1, 0))
        act, conf = finish(action, np.ones(rows), self.warmup_mask(rows))
        return StrategyOutput(act, conf, {"upper": upper, "lower": lower})


class BreakoutPopulate(_Breakout):
    name = "test_breakout_populate"

    def populate(self, df: pd.DataFrame) -> pd.DataFrame:
        n = self.parameters["window"]
        df["upper"] = df["high"].rolling(n).max().shift(1)
        df["lower"] = df["low"].rolling(n).min().shift(1)
        df["buy"] = df["close"] > df["upper"]
        df["sell"] = df["close"] < df["lower"]
        return df


class BreakoutProcessData(_Breakout):
    name = "test_breakout_process_data"

    def process_data(self, df: pd.DataFrame) -> Signal:
        n = self.parameters["window"]
        last = df.iloc[-1]
        action, upper, lower = "hold", None, None
        if len(df) > n:
            upper = float(df["high"].iloc[-n - 1:-1].max())
            lower = float(df["low"].iloc[-n - 1:-1].min())
            if last["close"] > upper:
                action = "buy"
            elif last["close"] < lower:
                action = "sell"
        return Signal(action=action, confidence=1.0 if action != "hold" else 0.0,
                      indicators={"upper": upper, "lower": lower}, price=float(last["close"]),
                      timestamp=int(last["timestamp"]))


class LookaheadBreakout(_Breakout):
    """The populate form with a classic bug: it compares today's close with TOMORROW's channel (`shift(-1)`)."""

    name = "test_lookahead_breakout"

    def populate(self, df: pd.DataFrame) -> pd.DataFrame:
        n = self.parameters["window"]
        df["upper"] = df["high"].rolling(n).max().shift(1)
        df["lower"] = df["low"].rolling(n).min().shift(1)
        df["buy"] = df["close"].shift(-1) > df["upper"]  # BUG: peeks at the next candle's close
        df["sell"] = df["close"] < df["lower"]
        return df


FORMS = (BreakoutCompute, BreakoutPopulate, BreakoutProcessData)
