"""Candle/trade CSV reading and writing on the real sample files, and the errors for broken copies of them."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from apps.market.csvio import CsvFormatError, read_candle_csv, read_trades_csv, write_candle_csv
from apps.market.timeframes import TimeframeError


def _lines(path) -> list[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


def _write(path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def test_given_binance_gz_open_labelled_when_read_then_close_labels_and_candle_dtypes(data_dir):
    path = data_dir / "binance_spot_2023" / "binance_BTC_USDT-1m.csv.gz"
    df = read_candle_csv(path, timeframe="1m", time_label="open")
    assert list(df.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert df["timestamp"].dtype == np.int64
    assert all(df[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    assert len(df) == 66087
    assert df["timestamp"].iloc[0] == 1679004900000 + 60_000  # README: first OPEN time; close = open + 1m
    first = _lines(path)[1].split(",")
    assert df["open"].iloc[0] == float(first[1]) and df["volume"].iloc[0] == float(first[5])
    assert isinstance(df.index, pd.RangeIndex)


def test_given_close_label_when_read_then_timestamps_unchanged_and_extra_columns_ignored(data_dir):
    path = data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-1m_partA.csv"
    df = read_candle_csv(path, timeframe="1m", time_label="close")
    assert df["timestamp"].iloc[0] == 1762777020000
    assert "vwap" not in df.columns and "count" not in df.columns
    assert len(df) == 528


def test_given_a_candle_frame_when_written_and_read_back_then_identical_for_both_labels(data_dir, tmp_path):
    src = read_candle_csv(data_dir / "binance_spot_2023" / "binance_ETH_USDT-1h.csv", timeframe="1h", time_label="open")
    for label in ("open", "close"):
        for name in ("out.csv", "out.csv.gz"):
            out = tmp_path / f"{label}-{name}"
            assert write_candle_csv(src, out, timeframe="1h", time_label=label) == len(src)
            back = read_candle_csv(out, timeframe="1h", time_label=label)
            pd.testing.assert_frame_equal(back, src, check_exact=True)
    # The open-labelled export is byte-for-byte the data of the exchange file (same values, same label).
    exported = _lines(tmp_path / "open-out.csv")
    original = _lines(data_dir / "binance_spot_2023" / "binance_ETH_USDT-1h.csv")
    assert exported[0] == "timestamp,open,high,low,close,volume"
    assert [r.split(",")[0] for r in exported[1:]] == [r.split(",")[0] for r in original[1:]]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_given_a_missing_column_when_read_then_error_names_file_header_line_and_column(data_dir, tmp_path):
    lines = _lines(data_dir / "binance_spot_2023" / "binance_BTC_USDT-15m.csv")[:5]
    lines = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in lines]  # drop "low"
    bad = tmp_path / "nolow.csv"
    _write(bad, lines)
    with pytest.raises(CsvFormatError) as err:
        read_candle_csv(bad, timeframe="15m", time_label="open")
    msg = str(err.value)
    assert str(bad) in msg and "line 1" in msg and "'low'" in msg and "missing column" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("row", "field", "value", "rule"),
    [
        (7, "timestamp", "2023-04-01", "not an integer ms timestamp"),
        (3, "timestamp", "1680365700000.5", "not an integer ms timestamp"),
        (9, "timestamp", "", "empty value"),
        (4, "high", "abc", "not a number"),
        (12, "volume", "1,5", None),
    ],
)
def test_given_a_bad_value_when_read_then_error_names_file_line_field_and_rule(
    data_dir, tmp_path, row, field, value, rule
):
    lines = _lines(data_dir / "binance_spot_2023" / "binance_BTC_USDT-15m.csv")[:30]
    cols = lines[0].split(",")
    cells = lines[row].split(",")
    cells[cols.index(field)] = value
    lines[row] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    _write(bad, lines)
    with pytest.raises(CsvFormatError) as err:
        read_candle_csv(bad, timeframe="15m", time_label="open")
    msg = str(err.value)
    assert str(bad) in msg
    if rule is None:  # an unquoted comma makes one row too long: the parser names the line
        assert "line 13" in msg and "Expected 6 fields" in msg
    else:
        assert f"line {row + 1}" in msg and f"field {field!r}" in msg and rule in msg


def test_given_empty_price_fields_when_read_then_nan_kept_for_validation_and_rest_intact(data_dir, tmp_path):
    lines = _lines(data_dir / "binance_spot_2023" / "binance_BTC_USDT-30m.csv")[:11]
    cells = lines[5].split(",")
    cells[2] = ""
    lines[5] = ",".join(cells)
    path = tmp_path / "hole.csv"
    _write(path, lines)
    df = read_candle_csv(path, timeframe="30m", time_label="open")
    assert len(df) == 10
    assert np.isnan(df["high"].iloc[4]) and df["high"].drop(index=4).notna().all()


def test_given_blank_lines_and_float_timestamps_when_read_then_accepted(data_dir, tmp_path):
    lines = _lines(data_dir / "binance_spot_2023" / "binance_BTC_USDT-30m.csv")[:6]
    expected = read_candle_csv(data_dir / "binance_spot_2023" / "binance_BTC_USDT-30m.csv", timeframe="30m",
                               time_label="open").iloc[:5]
    cells = lines[2].split(",")
    cells[0] += ".0"
    lines[2] = ",".join(cells)
    lines.insert(3, "")
    path = tmp_path / "odd.csv"
    _write(path, lines)
    pd.testing.assert_frame_equal(read_candle_csv(path, timeframe="30m", time_label="open"), expected)


def test_given_missing_or_empty_file_or_bad_args_when_read_then_clear_errors(tmp_path):
    with pytest.raises(CsvFormatError, match="no such file"):
        read_candle_csv(tmp_path / "absent.csv", timeframe="1m", time_label="open")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CsvFormatError, match="line 1: empty file"):
        read_candle_csv(empty, timeframe="1m", time_label="open")
    with pytest.raises(TimeframeError):
        read_candle_csv(empty, timeframe="7m", time_label="open")
    with pytest.raises(ValueError, match="time label"):
        read_candle_csv(empty, timeframe="1m", time_label="middle")  # type: ignore[arg-type]
    notgz = tmp_path / "fake.csv.gz"
    notgz.write_text("timestamp,open\n")
    with pytest.raises(CsvFormatError, match="cannot read"):
        read_candle_csv(notgz, timeframe="1m", time_label="open")


def test_given_kraken_trades_when_read_then_trade_ids_sides_and_exact_values(data_dir):
    path = data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv"
    tr = read_trades_csv(path)
    assert list(tr.columns) == ["timestamp", "price", "amount", "side", "trade_id"]
    assert len(tr) == 500 and tr["timestamp"].dtype == np.int64
    assert tr["trade_id"].iloc[0] == "10218208" and tr["trade_id"].iloc[-1] == "10218707"
    assert set(tr["side"]) == {"buy", "sell"}
    assert tr["price"].iloc[0] == 105433.6 and tr["amount"].iloc[1] == 5e-05


def test_given_freqtrade_gz_trades_when_read_then_all_rows_in_file_order(data_dir):
    tr = read_trades_csv(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz")
    assert len(tr) == 12477
    assert (np.diff(tr["trade_id"].astype("int64")) == 1).all()  # consecutive ids: nothing lost or reordered
    assert (tr["side"].value_counts().to_dict()) == {"buy": 6524, "sell": 5953}


def test_given_trades_without_id_column_when_read_twice_then_same_generated_ids(data_dir, tmp_path):
    src = data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv"
    lines = [",".join(r.split(",")[:3]) for r in _lines(src)]
    path = tmp_path / "noid.csv"
    _write(path, lines)
    a, b = read_trades_csv(path), read_trades_csv(path)
    assert a["trade_id"].tolist() == b["trade_id"].tolist()
    assert a["trade_id"].is_unique
    assert a["trade_id"].iloc[0] == f"{a['timestamp'].iloc[0]}-1"
    assert a["trade_id"].iloc[-1] == f"{a['timestamp'].iloc[-1]}-500"
    assert (a["side"] == "").all()


def test_given_a_trade_with_an_empty_amount_when_read_then_error_names_the_line(data_dir, tmp_path):
    gz = data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"
    lines = _lines(gz)[:50]
    cells = lines[20].split(",")
    cells[2] = ""
    lines[20] = ",".join(cells)
    path = tmp_path / "trades.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(CsvFormatError, match=r"trades\.csv\.gz, line 21, field 'amount': missing value"):
        read_trades_csv(path)
    plain = tmp_path / "copy.csv"
    shutil.copy(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv", plain)
    text = plain.read_text().splitlines()
    text[9] = text[9].replace(text[9].split(",")[1], "abc", 1)
    _write(plain, text)
    with pytest.raises(CsvFormatError, match=r"line 10, field 'price': not a number: 'abc'"):
        read_trades_csv(plain)
