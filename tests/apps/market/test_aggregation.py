"""Trades -> candles and resampling, checked against the exchanges' own candles in sample_data/."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.market.aggregation import check_resample, resample_candles, trades_to_candles
from apps.market.csvio import read_candle_csv, read_trades_csv
from apps.market.timeframes import MINUTE_MS, TimeframeError, format_ms

OHLC = ["open", "high", "low", "close"]


def _agg(trades: pd.DataFrame, timeframe: str, **kw) -> pd.DataFrame:
    return trades_to_candles(
        trades["timestamp"].to_numpy(), trades["price"].to_numpy(), trades["amount"].to_numpy(), timeframe, **kw
    )


@pytest.fixture
def kraken(data_dir):
    trades = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")
    candles = read_candle_csv(
        data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-1m_partA.csv", timeframe="1m", time_label="open"
    )
    return trades, candles


@pytest.fixture(scope="module")
def binance_1m():
    from tests.conftest import DATA_DIR

    return {
        sym: read_candle_csv(
            DATA_DIR / "binance_spot_2023" / f"binance_{sym}_USDT-1m.csv.gz", timeframe="1m", time_label="open"
        )
        for sym in ("BTC", "ETH")
    }


# --- Kraken: trades vs the exchange's own 1m candles -----------------------------------------------------------------


def test_given_kraken_trades_when_aggregated_to_1m_then_144_of_145_minutes_equal_krakens_candles(kraken):
    trades, exchange = kraken
    ours = _agg(trades, "1m")
    assert len(ours) == 145  # minutes with at least one trade
    m = ours.merge(exchange, on="timestamp", how="left", suffixes=("", "_k"), validate="one_to_one")
    assert m["open_k"].notna().all(), "every trade minute has an exchange candle (close label = open + 60 s)"
    same = np.ones(len(m), dtype=bool)
    for col in OHLC:
        same &= (m[col] == m[f"{col}_k"]).to_numpy()
    same &= np.isclose(m["volume"], m["volume_k"], rtol=1e-9, atol=0)
    assert same.sum() == 144
    # The one that differs is the first trade minute (17:23, close 17:24): the trade list starts inside it, so Kraken
    # counted a trade we do not have. Its low and volume show the missing trade.
    bad = m.loc[~same].iloc[0]
    assert bad["timestamp"] == ours["timestamp"].iloc[0]
    assert format_ms(int(bad["timestamp"])) == "2025-11-10 17:24:00"
    assert bad["volume"] < bad["volume_k"]
    assert bad["low"] > bad["low_k"]


def test_given_kraken_zero_volume_minutes_when_aggregating_then_no_candle_without_fill_and_flat_equal_with_fill(
    kraken,
):
    trades, exchange = kraken
    zero = exchange.loc[exchange["volume"] == 0]
    assert len(zero) == 152
    ours = _agg(trades, "1m")
    assert not zero["timestamp"].isin(ours["timestamp"]).any()

    filled = _agg(trades, "1m", fill=True)
    assert filled["timestamp"].iloc[0] == ours["timestamp"].iloc[0]
    assert filled["timestamp"].iloc[-1] == ours["timestamp"].iloc[-1]
    assert (np.diff(filled["timestamp"]) == MINUTE_MS).all()
    assert filled["filled"].dtype == bool
    flat = filled.loc[filled["filled"]]
    assert len(flat) == len(filled) - len(ours)
    inside = zero.loc[zero["timestamp"].between(ours["timestamp"].iloc[0], ours["timestamp"].iloc[-1])]
    assert len(inside) == len(flat) == 77
    m = flat.merge(inside, on="timestamp", suffixes=("", "_k"), validate="one_to_one")
    assert len(m) == 77
    for col in OHLC:
        assert (m[col] == m[f"{col}_k"]).all(), col
    assert (m["volume"] == 0).all()
    # The real candles are untouched by filling.
    real = filled.loc[~filled["filled"]].drop(columns="filled").reset_index(drop=True)
    pd.testing.assert_frame_equal(real, ours)


# --- freqtrade: trades -> its derived 1m/5m files -----------------------------------------------------------------


@pytest.mark.parametrize("timeframe", ["1m", "5m"])
def test_given_freqtrade_xrp_trades_when_aggregated_then_equal_freqtrades_candles_exactly(data_dir, timeframe):
    trades = read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    expected = read_candle_csv(
        data_dir / "freqtrade_xrp_eth" / f"freqtrade_XRP_ETH-{timeframe}_derived_from_trades.csv",
        timeframe=timeframe,
        time_label="open",
    )
    ours = _agg(trades, timeframe)
    assert len(ours) == {"1m": 2469, "5m": 706}[timeframe]
    pd.testing.assert_frame_equal(ours, expected, check_exact=True)


# --- edges and order ------------------------------------------------------------------------------------------------


def test_given_a_trade_exactly_at_a_bucket_edge_when_aggregated_then_it_starts_the_next_candle(data_dir):
    trades = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv").iloc[:3]
    base = (int(trades["timestamp"].iloc[0]) // MINUTE_MS + 1) * MINUTE_MS  # a real minute edge after trade 0
    ts = np.array([base - 1, base, base + 1], dtype=np.int64)
    out = trades_to_candles(ts, trades["price"].to_numpy(), trades["amount"].to_numpy(), "1m")
    assert out["timestamp"].tolist() == [base, base + MINUTE_MS]
    assert out["open"].iloc[0] == out["close"].iloc[0] == trades["price"].iloc[0]
    assert out["open"].iloc[1] == trades["price"].iloc[1]
    assert out["close"].iloc[1] == trades["price"].iloc[2]


def test_given_many_trades_in_one_millisecond_when_aggregated_then_their_given_order_sets_open_and_close(data_dir):
    trades = read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    ts = trades["timestamp"].to_numpy()
    shared = np.flatnonzero(np.diff(ts) == 0)
    assert len(shared) == 2490  # as documented in sample_data/README.md
    # A millisecond with 3+ trades at different prices: every trade of the candle sits in that one millisecond.
    group = trades.loc[trades["timestamp"] == ts[shared[0]]]
    assert group["price"].nunique() > 1
    out = trades_to_candles(group["timestamp"].to_numpy(), group["price"].to_numpy(), group["amount"].to_numpy(), "1m")
    assert len(out) == 1
    assert out["open"].iloc[0] == group["price"].iloc[0]
    assert out["close"].iloc[0] == group["price"].iloc[-1]
    rev = group.iloc[::-1]
    out_rev = trades_to_candles(rev["timestamp"].to_numpy(), rev["price"].to_numpy(), rev["amount"].to_numpy(), "1m")
    assert out_rev["open"].iloc[0] == group["price"].iloc[-1]
    assert out_rev["close"].iloc[0] == group["price"].iloc[0]


def test_given_trades_out_of_time_order_when_aggregated_then_equal_to_the_stably_sorted_input(data_dir):
    trades = read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    shuffled = trades.sample(frac=1.0, random_state=7)
    restored = shuffled.sort_values("timestamp", kind="stable")
    pd.testing.assert_frame_equal(_agg(shuffled, "5m"), _agg(restored, "5m"), check_exact=True)
    # Sorting is by time only: among trades in one millisecond the given order still rules.
    assert not restored.index.equals(trades.index)


def test_given_bad_trade_values_when_aggregated_then_error_names_row_and_field(data_dir):
    trades = read_trades_csv(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")
    ts, price, amount = (trades[c].to_numpy().copy() for c in ("timestamp", "price", "amount"))
    price[17] = np.nan
    with pytest.raises(ValueError, match=r"row 17 .*'price'"):
        trades_to_candles(ts, price, amount, "1m")
    price[17] = 1.0
    amount[42] = -0.5
    with pytest.raises(ValueError, match=r"row 42 .*'amount'"):
        trades_to_candles(ts, price, amount, "1m")
    # Every kind of bad value, wherever it sits in its candle (first, middle, last trade), is named by row.
    minute = ts // MINUTE_MS
    first_of_minute = int(np.flatnonzero(np.diff(minute))[3] + 1)
    for row in (first_of_minute, first_of_minute + 1, first_of_minute - 1, len(ts) - 1):
        for field, value in (("price", np.nan), ("price", np.inf), ("price", 0.0), ("price", -3.0),
                             ("amount", np.nan), ("amount", np.inf), ("amount", -1e-9)):
            p, a = price.copy(), np.abs(amount)
            (p if field == "price" else a)[row] = value
            with pytest.raises(ValueError, match=rf"row {row} \(0-based\), field '{field}'"):
                trades_to_candles(ts, p, a, "1m")
    # Out-of-order input is sorted first; the row named is still the caller's row.
    p = price.copy()
    p[5] = np.nan
    with pytest.raises(ValueError, match=r"row 494 \(0-based\), field 'price'"):
        trades_to_candles(ts[::-1], p[::-1], np.abs(amount)[::-1], "1m")
    with pytest.raises(TimeframeError, match="unknown timeframe '2m'"):
        trades_to_candles(ts, price, np.abs(amount), "2m")
    with pytest.raises(ValueError, match="equal length"):
        trades_to_candles(ts[:-1], price, amount, "1m")


def test_given_no_trades_when_aggregated_then_empty_candle_frame_with_the_right_dtypes():
    out = trades_to_candles(np.empty(0, np.int64), np.empty(0), np.empty(0), "1h", fill=True)
    assert list(out.columns) == ["timestamp", "open", "high", "low", "close", "volume", "filled"]
    assert out["timestamp"].dtype == np.int64 and out["close"].dtype == np.float64 and len(out) == 0


# --- Binance 2023: exchange 1m -> exchange 5m/15m/30m/1h ---------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTC", "ETH"])
@pytest.mark.parametrize(("timeframe", "rows"), [("5m", 13217), ("15m", 2879), ("30m", 1439), ("1h", 719)])
def test_given_binance_1m_when_resampled_then_equal_binances_own_candles(
    data_dir, binance_1m, symbol, timeframe, rows
):
    ext = ".csv.gz" if timeframe == "5m" else ".csv"
    expected = read_candle_csv(
        data_dir / "binance_spot_2023" / f"binance_{symbol}_USDT-{timeframe}{ext}", timeframe=timeframe,
        time_label="open",
    )
    ours = resample_candles(binance_1m[symbol], "1m", timeframe)
    lo, hi = expected["timestamp"].iloc[0], expected["timestamp"].iloc[-1]
    ours = ours.loc[ours["timestamp"].between(lo, hi)].reset_index(drop=True)
    assert len(ours) == len(expected) == rows
    assert (ours["timestamp"].to_numpy() == expected["timestamp"].to_numpy()).all()
    for col in OHLC:
        assert (ours[col].to_numpy() == expected[col].to_numpy()).all(), col
    np.testing.assert_allclose(ours["volume"], expected["volume"], rtol=1e-6, atol=1e-9)


def test_given_the_2023_03_24_outage_when_resampling_then_complete_only_drops_partial_buckets(binance_1m):
    m1 = binance_1m["BTC"]
    day = m1.loc[m1["timestamp"].between(1679659200000, 1679673600000)]  # 2023-03-24 12:00 .. 16:00 (close times)
    gap = np.flatnonzero(np.diff(day["timestamp"]) > MINUTE_MS)
    assert len(gap) == 1
    first_missing = int(day["timestamp"].iloc[gap[0]]) + MINUTE_MS
    assert format_ms(first_missing) == "2023-03-24 12:41:00"  # the 12:40 candle (open label) is the first missing
    strict = resample_candles(m1, "1m", "1h")
    loose = resample_candles(m1, "1m", "1h", complete_only=False)
    h13 = 1679662800000  # 1h bucket 12:00-13:00 (close 13:00): only 40 of its 60 1m candles exist
    assert format_ms(h13) == "2023-03-24 13:00:00"
    assert h13 not in strict["timestamp"].to_numpy()
    row = loose.loc[loose["timestamp"] == h13].iloc[0]
    part = m1.loc[m1["timestamp"].between(h13 - 3_600_000 + 1, h13)]
    assert len(part) == 40
    assert row["high"] == part["high"].max() and row["close"] == part["close"].iloc[-1]
    # 13:00-14:00 has no 1m candle at all: no row either way.
    assert h13 + 3_600_000 not in loose["timestamp"].to_numpy()
    # 5m: the 80-minute hole is 16 whole buckets, so nothing partial there; the only partial 5m bucket is the last one
    # (the file ends at 21:01 open, two candles into 21:00-21:05).
    strict5 = resample_candles(m1, "1m", "5m")
    loose5 = resample_candles(m1, "1m", "5m", complete_only=False)
    assert len(loose5) - len(strict5) == 1
    assert format_ms(int(loose5["timestamp"].iloc[-1])) == "2023-05-01 21:05:00"
    # The 72 flat zero-volume 1m candles before the hole are real candles and make complete 5m buckets.
    flat5 = strict5.loc[strict5["timestamp"].between(1679657400000, 1679659200000)]
    assert (flat5["volume"] == 0).sum() >= 6


def test_given_1m_when_resampled_to_1d_then_days_close_at_midnight_utc_and_equal_4h_then_1d(binance_1m):
    m1 = binance_1m["ETH"]
    daily = resample_candles(m1, "1m", "1d")
    assert (daily["timestamp"] % 86_400_000 == 0).all()
    assert all(format_ms(int(t)).endswith("00:00:00") for t in daily["timestamp"])
    via_4h = resample_candles(resample_candles(m1, "1m", "4h"), "4h", "1d")
    # Days touched by the outage are incomplete in both paths, so both drop them.
    pd.testing.assert_frame_equal(daily, via_4h, check_exact=False, rtol=1e-12)
    # 2023-03-17 .. 2023-04-30 are 45 whole days; 2023-03-24 (close 03-25 00:00) lacks 80 candles.
    assert len(daily) == 44
    assert 1679702400000 not in daily["timestamp"].to_numpy()
    assert format_ms(1679702400000) == "2023-03-25 00:00:00"


def test_given_bad_resample_arguments_when_resampling_then_clear_errors(binance_1m):
    m1 = binance_1m["BTC"].iloc[:100]
    with pytest.raises(TimeframeError, match="whole multiple"):
        resample_candles(m1, "5m", "1m")
    with pytest.raises(TimeframeError, match="unknown timeframe '3m'"):
        check_resample("1m", "3m")
    with pytest.raises(ValueError, match="duplicate timestamp"):
        resample_candles(pd.concat([m1, m1.iloc[:1]]), "1m", "5m")
    shifted = m1.assign(timestamp=m1["timestamp"] + 1)
    with pytest.raises(TimeframeError, match="not on the 1m grid"):
        resample_candles(shifted, "1m", "5m")
    unsorted = m1.iloc[::-1].reset_index(drop=True)
    pd.testing.assert_frame_equal(resample_candles(unsorted, "1m", "15m"), resample_candles(m1, "1m", "15m"))
