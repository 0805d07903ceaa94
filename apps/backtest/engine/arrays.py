"""Candle data as contiguous arrays: what the sweep, walk-forward and their caches work on (pure: no Django)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from apps.market.validation import CANDLE_COLUMNS


@dataclass(frozen=True)
class CandleArrays:
    """The columns of a candle frame as contiguous arrays: what a chunk works on (cheap to slice and share)."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> CandleArrays:
        return cls(*(np.ascontiguousarray(df[c].to_numpy(dtype=np.int64 if c == "timestamp" else np.float64))
                     for c in CANDLE_COLUMNS))

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def slice(self, start: int, stop: int) -> CandleArrays:
        return CandleArrays(*(a[start:stop] for a in (self.timestamp, self.open, self.high, self.low, self.close,
                                                       self.volume)))

    def take(self, index: np.ndarray) -> CandleArrays:
        """The candles at `index` (e.g. the concatenated test windows of a walk-forward)."""
        return CandleArrays(*(a[index] for a in (self.timestamp, self.open, self.high, self.low, self.close,
                                                  self.volume)))
