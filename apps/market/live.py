"""Incremental trades -> candles for live streams (pure: no Django), with the SAME rules and code as `aggregate_trades`.

A `CandleBuilder` buffers the trades of the bucket being formed and, when it closes, turns them into one candle with
`aggregation.trades_to_candles` (the kernel the batch path uses), so a stream-built candle equals the batch
aggregation of the same trades bit for bit: bucket [t - tf, t) labelled t, open = first trade in arrival order
(trades sharing a millisecond keep their order), no candle for a bucket without trades unless `flat_fill`.

A bucket closes when a trade at or after its close time arrives (`add`), or when the clock passes close + grace
(`close_due`). Trades older than the bucket being formed (they arrive after it closed) are counted in `late`, never
merged into a stored candle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from apps.market.aggregation import empty_candle_frame, trades_to_candles
from apps.market.timeframes import timeframe_ms


@dataclass
class Closed:
    """Candles closed by one call (close-labelled frame, maybe empty) and the close time they settle: every bucket
    with close <= `through` is final (a bucket without a row there had no trade)."""

    candles: pd.DataFrame
    through: int


class CandleBuilder:
    """Builds `timeframe` candles from trades that arrive in time order, starting with the bucket opening at `start`.

    Trades before `start` are ignored (the caller completes that range another way, e.g. from REST).
    """

    def __init__(self, timeframe: str, *, start: int, flat_fill: bool = False, last_close: float | None = None):
        self.tf = timeframe_ms(timeframe)
        self.timeframe = timeframe
        if start % self.tf:
            raise ValueError(f"builder start {start} is not on the {timeframe} grid")
        self.start = start
        self.open_at = start  # open time of the bucket being formed
        self.flat_fill = flat_fill
        self.last_close = last_close  # close price of the previous candle (flat fill of empty buckets)
        self.late = 0
        self.ignored = 0
        self._ts: list[int] = []
        self._price: list[float] = []
        self._amount: list[float] = []

    @property
    def close_at(self) -> int:
        return self.open_at + self.tf

    def pending(self) -> int:
        return len(self._ts)

    def add(self, ts: int, price: float, amount: float) -> Closed | None:
        """Add one trade; returns the candles it closed (a trade at/after the current close), else None."""
        if ts < self.open_at:
            if ts < self.start:
                self.ignored += 1
            else:
                self.late += 1
            return None
        closed = self._close_until(ts) if ts >= self.close_at else None
        self._ts.append(ts)
        self._price.append(price)
        self._amount.append(amount)
        return closed

    def close_due(self, now: int, grace_ms: int) -> Closed | None:
        """Close the current bucket (and empty ones after it) once `now` >= close + grace."""
        if now < self.close_at + grace_ms:
            return None
        return self._close_until(now - grace_ms)

    def _close_until(self, t: int) -> Closed:
        """Close every bucket with close <= t (t = a time at or after the current close)."""
        through = (t // self.tf) * self.tf
        frame = self._emit()
        if self.flat_fill and self.last_close is not None:
            frame = self._fill(frame, through)
        if len(frame):
            self.last_close = float(frame["close"].iat[-1])
        self.open_at = through
        return Closed(frame, through)

    def _emit(self) -> pd.DataFrame:
        if not self._ts:
            return empty_candle_frame()
        ts = np.asarray(self._ts, dtype=np.int64)
        frame = trades_to_candles(ts, np.asarray(self._price), np.asarray(self._amount), self.timeframe)
        self._ts, self._price, self._amount = [], [], []
        return frame

    def _fill(self, frame: pd.DataFrame, through: int) -> pd.DataFrame:
        return fill_flat(frame, self.open_at + self.tf, through, self.tf, self.last_close)


def fill_flat(frame: pd.DataFrame, first: int, last: int, tf: int, price: float | None) -> pd.DataFrame:
    """Every close time in [first, last]: rows of `frame` where present, else a flat zero-volume candle at the
    previous close (`price` before the first row; with no price known yet, no candle), like Kraken's own candles."""
    want = np.arange(first, last + 1, tf, dtype=np.int64)
    have = frame["timestamp"].to_numpy()
    if not len(np.setdiff1d(want, have)):
        return frame
    by_ts = {int(t): i for i, t in enumerate(have.tolist())}
    rows = []
    for t in want.tolist():
        i = by_ts.get(t)
        if i is None:
            if price is not None:
                rows.append((t, price, price, price, price, 0.0))
        else:
            row = frame.iloc[i]
            rows.append((t, float(row.open), float(row.high), float(row.low), float(row.close), float(row.volume)))
            price = float(row.close)
    out = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    return out.astype({"timestamp": np.int64})
