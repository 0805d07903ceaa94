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
        self.late_floor: int | None = None  # open time of the oldest bucket a late trade belonged to
        self.ignored = 0
        # trades of the bucket being formed, as the arrays they came in
        self._ts: list[np.ndarray] = []
        self._price: list[np.ndarray] = []
        self._amount: list[np.ndarray] = []

    @property
    def close_at(self) -> int:
        return self.open_at + self.tf

    def pending(self) -> int:
        return sum(len(a) for a in self._ts)

    def add(self, ts: np.ndarray, price: np.ndarray, amount: np.ndarray) -> Closed | None:
        """Add trades in arrival order (arrays); returns the candles they closed (a trade at/after the current close),
        else None. The same as adding them one by one: a trade older than the bucket being formed when it arrives
        (the newest trade before it decides) is late (or ignored before `start`) and never merged."""
        ts = np.asarray(ts, dtype=np.int64)
        if not len(ts):
            return None
        tf = self.tf
        # open time of the bucket being formed when each trade arrives: the newest trade before it decides
        seen = np.maximum.accumulate(ts)
        opens = np.empty_like(ts)
        opens[0] = self.open_at
        np.maximum((seen[:-1] // tf) * tf, self.open_at, out=opens[1:])
        stale = ts < opens
        if stale.any():
            ignored = ts[stale] < self.start
            self.ignored += int(ignored.sum())
            late = ts[stale][~ignored]
            if len(late):
                self.late += len(late)
                floor = int(late.min() // tf * tf)
                self.late_floor = floor if self.late_floor is None else min(self.late_floor, floor)
            keep = ~stale
            ts, price, amount = ts[keep], np.asarray(price)[keep], np.asarray(amount)[keep]
            if not len(ts):
                return None
        newest = int(seen[-1])
        if newest < self.close_at:
            self._push(ts, price, amount)
            return None
        # Accepted trades' buckets never go back in arrival order, so the bucket of the newest trade starts at one
        # index: what comes before it closes (one kernel call over the whole batch), the rest is the bucket in progress.
        through = (newest // tf) * tf
        self._push(ts, price, amount)
        all_ts, all_price, all_amount = (np.concatenate(a) if len(a) > 1 else a[0]
                                         for a in (self._ts, self._price, self._amount))
        cut = int(np.searchsorted((all_ts // tf) * tf >= through, True))
        self._ts, self._price, self._amount = [all_ts[cut:]], [all_price[cut:]], [all_amount[cut:]]
        return self._closed(self._emit(all_ts[:cut], all_price[:cut], all_amount[:cut]), through)

    def close_due(self, now: int, grace_ms: int) -> Closed | None:
        """Close the current bucket (and empty ones after it) once `now` >= close + grace."""
        if now < self.close_at + grace_ms:
            return None
        through = ((now - grace_ms) // self.tf) * self.tf
        ts, price, amount = (np.concatenate(a) if a else np.empty(0) for a in (self._ts, self._price, self._amount))
        self._ts, self._price, self._amount = [], [], []
        return self._closed(self._emit(ts.astype(np.int64), price, amount), through)

    def _push(self, ts: np.ndarray, price: np.ndarray, amount: np.ndarray) -> None:
        self._ts.append(ts)
        self._price.append(np.asarray(price, dtype=np.float64))
        self._amount.append(np.asarray(amount, dtype=np.float64))

    def _closed(self, frame: pd.DataFrame, through: int) -> Closed:
        """Every bucket with close <= through is final: flat fill, remember the last close, move on."""
        if self.flat_fill and self.last_close is not None:
            frame = self._fill(frame, through)
        if len(frame):
            self.last_close = float(frame["close"].iat[-1])
        self.open_at = through
        return Closed(frame, through)

    def _emit(self, ts: np.ndarray, price: np.ndarray, amount: np.ndarray) -> pd.DataFrame:
        if not len(ts):
            return empty_candle_frame()
        return trades_to_candles(ts, price, amount, self.timeframe)

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
