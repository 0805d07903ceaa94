"""Validation of candle and trade batches (pure), on real Binance rows with a few corrupted on purpose."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.market.csvio import read_candle_csv
from apps.market.timeframes import TimeframeError
from apps.market.validation import validate_candles, validate_trades

MARKET = "binance BTC/USDT"


@pytest.fixture
def real_1m(data_dir) -> pd.DataFrame:
    df = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz", timeframe="1m",
                         time_label="open")
    return df.iloc[:200].reset_index(drop=True)


def test_given_real_binance_rows_when_validated_then_all_valid_and_unchanged(real_1m):
    valid, rejected = validate_candles(real_1m, market=MARKET, timeframe="1m")
    assert rejected == []
    pd.testing.assert_frame_equal(valid, real_1m)
    assert valid["timestamp"].dtype == np.int64


def test_given_corrupted_rows_when_validated_then_each_rejected_by_rule_and_rest_kept(real_1m):
    df = real_1m.copy()
    df.loc[3, "high"] = np.nan
    df.loc[10, "high"] = df.loc[10, "low"] - 1.0
    df.loc[20, "volume"] = -1.0
    df.loc[30, "timestamp"] = df.loc[30, "timestamp"] + 1
    df.loc[40, "timestamp"] = df.loc[39, "timestamp"]
    df.loc[50, "close"] = np.inf
    df.loc[60, "low"] = max(df.loc[60, "open"], df.loc[60, "close"]) + 0.5
    df.loc[60, "high"] = df.loc[60, "low"] + 1.0

    valid, rejected = validate_candles(df, market=MARKET, timeframe="1m")

    assert {(r.row, r.rule) for r in rejected} == {
        (3, "nan"), (10, "high_low"), (20, "negative_volume"), (30, "off_grid"), (40, "duplicate_timestamp"),
        (50, "nan"), (60, "high_low"),
    }
    assert len(valid) == 200 - 7
    assert not valid["timestamp"].isin([df.loc[30, "timestamp"]]).any()
    assert valid["timestamp"].is_unique and valid["timestamp"].is_monotonic_increasing
    by_row = {r.row: r for r in rejected}
    assert by_row[3].timestamp == int(df.loc[3, "timestamp"])
    assert "high=nan" in by_row[3].message
    assert by_row[60].message.endswith(f"low {df.loc[60, 'low']} > min(open, close) "
                                       f"{min(df.loc[60, 'open'], df.loc[60, 'close'])} [high_low]")
    assert "is not a multiple of 1m" in by_row[30].message


def test_given_high_below_body_when_validated_then_message_names_market_time_and_rule():
    df = pd.DataFrame({"timestamp": [1679652540000], "open": [27010.5], "high": [27000.0], "low": [26990.0],
                       "close": [27005.0], "volume": [3.0]})
    valid, rejected = validate_candles(df, market=MARKET, timeframe="1m")
    assert len(valid) == 0
    assert rejected[0].message == (
        "binance BTC/USDT 1m @ 1679652540000 (2023-03-24 10:09:00): rejected: "
        "high 27000.0 < max(open, close) 27010.5 [high_low]"
    )
    assert (rejected[0].market, rejected[0].timestamp, rejected[0].rule, rejected[0].row) == (
        MARKET, 1679652540000, "high_low", 0)


def test_given_nan_timestamp_when_validated_then_rejected_without_timestamp(real_1m):
    df = real_1m.iloc[:3].astype({"timestamp": "float64"})
    df.loc[1, "timestamp"] = np.nan
    valid, rejected = validate_candles(df, market=MARKET, timeframe="1m")
    assert [(r.row, r.rule, r.timestamp) for r in rejected] == [(1, "nan", None)]
    assert valid["timestamp"].tolist() == [int(df.loc[0, "timestamp"]), int(df.loc[2, "timestamp"])]


def test_given_unsorted_batch_when_validated_then_valid_frame_is_ascending(real_1m):
    shuffled = real_1m.iloc[::-1].reset_index(drop=True)
    valid, rejected = validate_candles(shuffled, market=MARKET, timeframe="1m")
    assert rejected == []
    pd.testing.assert_frame_equal(valid, real_1m)


def test_given_5m_grid_when_1m_candle_checked_as_5m_then_off_grid(real_1m):
    valid, rejected = validate_candles(real_1m.iloc[:10], market=MARKET, timeframe="5m")
    assert len(valid) + len(rejected) == 10
    assert all(r.rule == "off_grid" for r in rejected)
    assert (valid["timestamp"] % 300_000 == 0).all()
    assert len(valid) == 2


def test_given_unknown_timeframe_when_validated_then_timeframe_error(real_1m):
    with pytest.raises(TimeframeError, match="unknown timeframe '2m'"):
        validate_candles(real_1m, market=MARKET, timeframe="2m")


def test_given_missing_column_when_validated_then_error_names_it(real_1m):
    with pytest.raises(ValueError, match="missing column.*volume"):
        validate_candles(real_1m.drop(columns=["volume"]), market=MARKET, timeframe="1m")


def test_given_empty_batch_when_validated_then_empty_candle_frame():
    valid, rejected = validate_candles(pd.DataFrame(columns=["timestamp", "open", "high", "low", "close", "volume"]),
                                       market=MARKET, timeframe="1m")
    assert rejected == [] and len(valid) == 0
    assert list(valid.columns) == ["timestamp", "open", "high", "low", "close", "volume"]


def test_given_real_trades_with_bad_rows_when_validated_then_bad_ones_rejected(data_dir):
    from apps.market.csvio import read_trades_csv

    trades = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")
    trades.loc[5, "price"] = 0.0
    trades.loc[6, "amount"] = -0.1
    trades.loc[7, "price"] = np.nan
    valid, rejected = validate_trades(trades, market="kraken BTC/USDT")
    assert [(r.row, r.rule) for r in rejected] == [(5, "non_positive_price"), (6, "negative_amount"), (7, "nan")]
    assert len(valid) == 497
    assert valid["trade_id"].iloc[5] == trades["trade_id"].iloc[8]
