"""Real Binance BTC/USDT candles from sample_data/, relabelled to close time (file labels are open times)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from apps.market.timeframes import open_to_close

SAMPLE = Path(__file__).resolve().parents[4] / "sample_data" / "binance_spot_2023"


def load_candles(filename: str, timeframe: str) -> pd.DataFrame:
    """A candle frame (close labels, float64 OHLCV, RangeIndex) from one of the Binance sample files."""
    df = pd.read_csv(SAMPLE / filename, usecols=["timestamp", "open", "high", "low", "close", "volume"])
    df["timestamp"] = open_to_close(df["timestamp"].to_numpy(dtype=np.int64), timeframe)
    for col in ("open", "high", "low", "close", "volume"):
        df[col] = df[col].astype(np.float64)
    return df


@pytest.fixture(scope="session")
def btc_1m() -> pd.DataFrame:
    return load_candles("binance_BTC_USDT-1m.csv.gz", "1m")


@pytest.fixture(scope="session")
def btc_5m() -> pd.DataFrame:
    return load_candles("binance_BTC_USDT-5m.csv.gz", "5m")


@pytest.fixture(scope="session")
def eth_1h() -> pd.DataFrame:
    return load_candles("binance_ETH_USDT-1h.csv", "1h")
