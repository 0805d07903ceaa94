"""Candle columns as contiguous arrays: what the tick core, the sweep, walk-forward and their caches work on (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apps.market.validation import CANDLE_COLUMNS


@dataclass(frozen=True)
class CandleArrays:
    """The columns of a candle frame (close-time ms ascending, then OHLCV) as contiguous arrays: cheap to slice and
    share between the bots of a shard or the parameter sets of a sweep chunk."""

    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, frame) -> CandleArrays:
        """From a DataFrame or a mapping of column -> array-like."""
        def col(name: str) -> np.ndarray:
            dtype = np.int64 if name == "timestamp" else np.float64
            values = frame[name]
            return np.ascontiguousarray(values.to_numpy(dtype=dtype) if hasattr(values, "to_numpy")
                                        else np.asarray(values, dtype=dtype))

        return cls(*(col(c) for c in CANDLE_COLUMNS))

    def __len__(self) -> int:
        return int(self.timestamp.shape[0])

    def _columns(self) -> tuple[np.ndarray, ...]:
        return self.timestamp, self.open, self.high, self.low, self.close, self.volume

    def slice(self, start: int | None, stop: int | None) -> CandleArrays:
        return CandleArrays(*(a[start:stop] for a in self._columns()))

    def take(self, index: np.ndarray) -> CandleArrays:
        """The candles at `index` (e.g. the concatenated test windows of a walk-forward)."""
        return CandleArrays(*(a[index] for a in self._columns()))
