"""aggregate_trades, export_candles, resample_candles: in-process (call_command) and as processes (exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.market.csvio import read_candle_csv
from apps.market.models import Candle
from apps.market.selectors import candle_frame
from apps.market.services import ingest_candles

ROOT = Path(__file__).resolve().parents[3]
BINANCE = "binance_spot_2023"


def _manage(
    *args: str, env_extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _no_db_env(tmp_path: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """The embedded default (no DATABASE_URL / REDIS_URL) with its data dir in tmp_path."""
    extra = {"DJANGO_SETTINGS_MODULE": "tradebot.settings.base", "TRADEBOT_DATA_DIR": str(tmp_path / "var")}
    return extra, ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


# --- aggregate_trades ------------------------------------------------------------------------------------------------


def test_given_freqtrade_trades_when_aggregate_trades_runs_then_csv_equals_freqtrades_5m_candles(data_dir, tmp_path):
    out = tmp_path / "xrp-5m.csv"
    stdout = StringIO()
    call_command(
        "aggregate_trades", str(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"),
        "--timeframe", "5m", "--output", str(out), stdout=stdout,
    )
    assert "12477 trades" in stdout.getvalue() and "706 5m candles" in stdout.getvalue()
    assert out.read_text().splitlines()[0] == "timestamp,open,high,low,close,volume"
    ours = read_candle_csv(out, timeframe="5m", time_label="close")
    expected = read_candle_csv(
        data_dir / "freqtrade_xrp_eth" / "freqtrade_XRP_ETH-5m_derived_from_trades.csv", timeframe="5m",
        time_label="open",
    )
    pd.testing.assert_frame_equal(ours, expected, check_exact=True)


def test_given_fill_when_aggregate_trades_runs_then_filled_column_marks_flat_candles(data_dir, tmp_path):
    out = tmp_path / "kraken-1m.csv.gz"
    call_command(
        "aggregate_trades", str(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv"),
        "--timeframe", "1m", "--output", str(out), "--fill", stdout=StringIO(),
    )
    df = pd.read_csv(out)
    assert list(df.columns) == ["timestamp", "open", "high", "low", "close", "volume", "filled"]
    assert len(df) == 222 and int(df["filled"].sum()) == 77
    flat = df.loc[df["filled"]]
    assert (flat["volume"] == 0).all() and (flat["open"] == flat["close"]).all()
    assert (np.diff(df["timestamp"]) == 60_000).all()


def test_given_no_database_configured_when_aggregate_trades_runs_as_a_process_then_it_works_without_sqlite(
    data_dir, tmp_path
):
    extra, drop = _no_db_env(tmp_path)
    out = tmp_path / "xrp-1m.csv"
    proc = _manage(
        "aggregate_trades", str(data_dir / "freqtrade_xrp_eth" / "binance_XRP_ETH-trades.csv.gz"),
        "--timeframe", "1m", "--output", str(out), env_extra=extra, drop=drop,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2469 1m candles" in proc.stdout
    assert len(read_candle_csv(out, timeframe="1m", time_label="close")) == 2469
    assert not (tmp_path / "var" / "tradebot.sqlite3").exists()


def test_given_a_bad_trades_file_when_aggregate_trades_runs_then_exit_1_and_one_line_naming_file_line_field(
    data_dir, tmp_path
):
    lines = (data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv").read_text().splitlines()
    cells = lines[33].split(",")
    cells[1] = "12O.5"  # a letter O typed for a zero
    lines[33] = ",".join(cells)
    bad = tmp_path / "bad-trades.csv"
    bad.write_text("\n".join(lines) + "\n")
    extra, drop = _no_db_env(tmp_path)
    out = tmp_path / "never.csv"
    proc = _manage("aggregate_trades", str(bad), "--timeframe", "1m", "--output", str(out), env_extra=extra, drop=drop)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert str(bad) in err[0] and "line 34" in err[0] and "'price'" in err[0] and "not a number: '12O.5'" in err[0]
    assert not out.exists()


def test_given_a_non_positive_price_when_aggregate_trades_runs_then_error_names_file_row_and_field(data_dir, tmp_path):
    lines = (data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = "-1"
    lines[5] = ",".join(cells)
    bad = tmp_path / "neg.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match=r"neg\.csv: trade row 4 \(0-based\), field 'price'"):
        call_command("aggregate_trades", str(bad), "--timeframe", "1m", "--output", str(tmp_path / "o.csv"))


def test_given_bad_arguments_when_aggregate_trades_runs_then_exit_2(data_dir, tmp_path):
    extra, drop = _no_db_env(tmp_path)
    trades = str(data_dir / "kraken_matched_pair" / "kraken_XBTUSDT-trades_partA.csv")
    proc = _manage("aggregate_trades", trades, "--timeframe", "2m", "--output", str(tmp_path / "o.csv"),
                   env_extra=extra, drop=drop)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "CommandError: --timeframe: unknown timeframe '2m': expected one of 1m, 5m, 15m, 30m, 1h, 4h, 1d"
    ]
    proc = _manage("aggregate_trades", trades, "--timeframe", "1m", env_extra=extra, drop=drop)  # no --output
    assert proc.returncode == 2 and "--output" in proc.stderr
    proc = _manage("aggregate_trades", str(tmp_path / "absent.csv"), "--timeframe", "1m", "--output",
                   str(tmp_path / "o.csv"), env_extra=extra, drop=drop)
    assert proc.returncode == 1 and "absent.csv: no such file" in proc.stderr


# --- export_candles --------------------------------------------------------------------------------------------------


@pytest.fixture
def eth_1h(data_dir):
    df = read_candle_csv(data_dir / BINANCE / "binance_ETH_USDT-1h.csv", timeframe="1h", time_label="open")
    result = ingest_candles(exchange="binance", symbol="ETH/USDT", timeframe="1h", df=df, publish=False)
    assert result.stored == 719 and not result.rejected
    return df


@pytest.mark.django_db
def test_given_stored_candles_when_exported_with_open_labels_then_file_equals_the_exchange_file(
    data_dir, tmp_path, eth_1h
):
    out = tmp_path / "eth-1h.csv"
    stdout = StringIO()
    call_command(
        "export_candles", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "1h", "--time-label", "open",
        "--output", str(out), stdout=stdout,
    )
    assert "exported 719 binance ETH/USDT 1h candles" in stdout.getvalue()
    original = pd.read_csv(data_dir / BINANCE / "binance_ETH_USDT-1h.csv")
    exported = pd.read_csv(out)
    pd.testing.assert_frame_equal(exported, original, check_exact=True)


@pytest.mark.django_db
def test_given_bounds_when_exported_then_close_times_inclusive_and_close_label_default(tmp_path, eth_1h):
    start, end = int(eth_1h["timestamp"].iloc[10]), int(eth_1h["timestamp"].iloc[33])
    out = tmp_path / "part.csv"
    call_command(
        "export_candles", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "1h",
        "--start", str(start), "--end", str(end), "--output", str(out), stdout=StringIO(),
    )
    back = read_candle_csv(out, timeframe="1h", time_label="close")
    pd.testing.assert_frame_equal(back, eth_1h.iloc[10:34].reset_index(drop=True), check_exact=True)
    # ISO dates work too: the day 2023-04-02 has 24 candles closing in [00:00, 2023-04-03 00:00].
    iso = tmp_path / "iso.csv"
    call_command(
        "export_candles", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "1h",
        "--start", "2023-04-02T01:00", "--end", "2023-04-03", "--output", str(iso), stdout=StringIO(),
    )
    assert len(read_candle_csv(iso, timeframe="1h", time_label="close")) == 24


@pytest.mark.django_db
def test_given_nothing_stored_or_bad_arguments_when_exporting_then_command_errors(tmp_path, eth_1h):
    base = ["export_candles", "--exchange", "binance", "--timeframe", "1h", "--output", str(tmp_path / "x.csv")]
    with pytest.raises(CommandError, match="no 1h candles stored for binance BTC/USDT") as err:
        call_command(*base, "--symbol", "BTC/USDT")
    assert err.value.returncode == 1
    with pytest.raises(CommandError, match="--start .* is after --end") as err:
        call_command(*base, "--symbol", "ETH/USDT", "--start", "2000", "--end", "1000")
    assert err.value.returncode == 2
    with pytest.raises(CommandError, match="--end: not a time") as err:
        call_command(*base, "--symbol", "ETH/USDT", "--end", "yesterday")
    assert err.value.returncode == 2
    with pytest.raises(CommandError, match="unknown timeframe '2h'"):
        call_command("export_candles", "--exchange", "binance", "--symbol", "ETH/USDT", "--timeframe", "2h",
                     "--output", str(tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()


# --- resample_candles ------------------------------------------------------------------------------------------------


@pytest.fixture
def btc_1m(data_dir):
    return read_candle_csv(data_dir / BINANCE / "binance_BTC_USDT-1m.csv.gz", timeframe="1m", time_label="open")


@pytest.mark.django_db
def test_given_stored_1m_when_resampled_to_1h_then_stored_1h_equals_binances_own_and_rerun_is_idempotent(
    data_dir, btc_1m
):
    expected = read_candle_csv(data_dir / BINANCE / "binance_BTC_USDT-1h.csv", timeframe="1h", time_label="open")
    first, last = int(expected["timestamp"].iloc[0]), int(expected["timestamp"].iloc[47])  # two days of 1h
    window = btc_1m.loc[btc_1m["timestamp"].between(first - 3_600_000 + 1, last + 60_000 * 30)]
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1m", df=window, publish=False)

    stdout = StringIO()
    call_command("resample_candles", "--exchange", "binance", "--symbol", "BTC/USDT", "--from", "1m", "--to", "1h",
                 stdout=stdout)
    assert "binance BTC/USDT 1m -> 1h: built 48 complete candles, 48 new" in stdout.getvalue()
    stored = candle_frame(exchange="binance", symbol="BTC/USDT", timeframe="1h")
    want = expected.iloc[:48].reset_index(drop=True)
    assert (stored["timestamp"].to_numpy() == want["timestamp"].to_numpy()).all()
    for col in ("open", "high", "low", "close"):
        assert (stored[col].to_numpy() == want[col].to_numpy()).all(), col
    np.testing.assert_allclose(stored["volume"], want["volume"], rtol=1e-6)
    # The trailing 30 minutes are an incomplete bucket: not stored.
    assert Candle.objects.filter(symbol="BTC/USDT", timeframe="1h", timestamp__gt=last).count() == 0

    again = StringIO()
    call_command("resample_candles", "--exchange", "binance", "--symbol", "BTC/USDT", "--to", "1h", stdout=again)
    assert ", 0 new," in again.getvalue()
    assert Candle.objects.filter(symbol="BTC/USDT", timeframe="1h").count() == 48


@pytest.mark.django_db
def test_given_the_outage_in_stored_1m_when_resampled_then_the_partial_hour_is_not_built(btc_1m):
    window = btc_1m.loc[btc_1m["timestamp"].between(1679655600000 + 60_000, 1679673600000)]  # 03-24 11:00 .. 16:00
    ingest_candles(exchange="binance", symbol="BTC/USDT", timeframe="1m", df=window, publish=False)
    call_command("resample_candles", "--exchange", "binance", "--symbol", "BTC/USDT", "--to", "1h", stdout=StringIO())
    stored = candle_frame(exchange="binance", symbol="BTC/USDT", timeframe="1h")["timestamp"].tolist()
    # 11-12 complete (flat outage candles count), 12-13 has 40 of 60, 13-14 none, 14-15 and 15-16 complete.
    assert stored == [1679659200000, 1679670000000, 1679673600000]


@pytest.mark.django_db
def test_given_bad_resample_arguments_or_no_source_when_resampling_then_command_errors():
    base = ["resample_candles", "--exchange", "binance", "--symbol", "BTC/USDT"]
    with pytest.raises(CommandError, match="whole multiple") as err:
        call_command(*base, "--from", "1h", "--to", "5m")
    assert err.value.returncode == 2
    with pytest.raises(CommandError, match="unknown timeframe '3m'") as err:
        call_command(*base, "--to", "3m")
    assert err.value.returncode == 2
    with pytest.raises(CommandError, match="no 1m candles stored for binance BTC/USDT") as err:
        call_command(*base, "--to", "1h")
    assert err.value.returncode == 1
    assert not Candle.objects.filter(timeframe="1h").exists()
