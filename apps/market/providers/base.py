"""The provider contract: where closed candles and raw trades come from (an exchange via ccxt, a file, stored history).

Every provider speaks the platform's convention: candle frames labelled by CLOSE time (ms UTC), only closed candles.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from apps.common.errors import ApplicationError

TRADE_COLUMNS: tuple[str, ...] = ("timestamp", "price", "amount", "side", "trade_id")


class ProviderError(ApplicationError):
    """A provider cannot serve a request (unknown exchange, symbol, timeframe, missing file...): not worth retrying."""


@runtime_checkable
class Provider(Protocol):
    """Source of closed candles (close-time labels) and raw trades."""

    name: str

    def fetch_candles(
        self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Pages of closed candles with close time > since (exclusive) and <= until (inclusive), ascending."""
        ...

    def fetch_trades(self, symbol: str, since: int | None = None, limit: int | None = None) -> pd.DataFrame:
        """Raw trades (timestamp, price, amount, side, trade_id) with timestamp >= since."""
        ...


def empty_candle_frame() -> pd.DataFrame:
    return candle_frame_from_arrays(np.empty(0, np.int64), *(np.empty(0) for _ in range(5)))


def candle_frame_from_arrays(
    timestamp: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> pd.DataFrame:
    """The one shape every provider returns (int64 close ms + float64 OHLCV, RangeIndex)."""
    return pd.DataFrame(
        {
            "timestamp": np.asarray(timestamp, dtype=np.int64),
            "open": np.asarray(open_, dtype=np.float64),
            "high": np.asarray(high, dtype=np.float64),
            "low": np.asarray(low, dtype=np.float64),
            "close": np.asarray(close, dtype=np.float64),
            "volume": np.asarray(volume, dtype=np.float64),
        }
    )


def empty_trades_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": np.empty(0, np.int64),
            "price": np.empty(0),
            "amount": np.empty(0),
            "side": pd.Series([], dtype="str"),
            "trade_id": pd.Series([], dtype="str"),
        }
    )


def window(df: pd.DataFrame, since: int | None, until: int | None) -> pd.DataFrame:
    """Rows with since < timestamp <= until (close times), index reset."""
    mask = np.ones(len(df), dtype=bool)
    ts = df["timestamp"].to_numpy()
    if since is not None:
        mask &= ts > since
    if until is not None:
        mask &= ts <= until
    if mask.all():
        return df.reset_index(drop=True)
    return df.loc[mask].reset_index(drop=True)


def paginate(df: pd.DataFrame, page_size: int) -> Iterator[pd.DataFrame]:
    """Split a frame into pages of at most page_size rows (a provider streams, the consumer stores page by page)."""
    page_size = max(1, int(page_size))
    for start in range(0, len(df), page_size):
        yield df.iloc[start : start + page_size].reset_index(drop=True)
