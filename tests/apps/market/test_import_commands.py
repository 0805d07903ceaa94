"""import_candles / import_trades: in-process (call_command) and as real processes (exit codes, one-line errors),
on PostgreSQL and on the embedded default (SQLite, no services)."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from apps.market.models import Candle, RawTrade

ROOT = Path(__file__).resolve().parents[3]
BTC_1M = "binance_spot_2023/binance_BTC_USDT-1m.csv.gz"
BTC_5M = "binance_spot_2023/binance_BTC_USDT-5m.csv.gz"
KRAKEN_TRADES = "kraken_matched_pair/kraken_XBTUSDT-trades_partA.csv"
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
    env.update(extra)
    return env


def _test_db_env() -> dict[str, str]:
    """Environment pointing a child process at the database the test runs on."""
    s = connection.settings_dict
    url = f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    return _env(DATABASE_URL=url, REDIS_URL=os.environ.get("REDIS_URL", ""),
                DJANGO_SETTINGS_MODULE="tradebot.settings.base")


def _import(*args: str) -> str:
    out = StringIO()
    call_command("import_candles", *args, stdout=out)
    return out.getvalue()


def _corrupted_copy(data_dir: Path, tmp_path: Path) -> Path:
    """The first 50 real 1m rows with four of them broken: empty high, high < low, negative volume, off-grid."""
    with gzip.open(data_dir / BTC_1M, "rt") as fh:
        lines = [next(fh) for _ in range(51)]
    rows = [line.rstrip("\n").split(",") for line in lines[1:]]
    rows[2][2] = ""  # row 3: high missing -> NaN
    rows[9][2] = str(float(rows[9][3]) - 10)  # row 10: high < low
    rows[19][5] = "-1.5"  # row 20: negative volume
    rows[29][0] = str(int(rows[29][0]) + 1500)  # row 30: off the 1m grid
    path = tmp_path / "btc-corrupted.csv"
    path.write_text(lines[0] + "".join(",".join(r) + "\n" for r in rows))
    return path


@pytest.mark.django_db
def test_given_real_binance_file_when_imported_twice_then_all_stored_once_with_close_labels(data_dir):
    args = (str(data_dir / BTC_1M), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
            "--time-label", "open")

    first = _import(*args)
    second = _import(*args)

    assert "received 66087, stored 66087 (66087 new, 0 updated, 0 unchanged), rejected 0" in first
    assert "received 66087, stored 66087 (0 new, 0 updated, 66087 unchanged), rejected 0" in second
    qs = Candle.objects.filter(exchange="binance", symbol="BTC/USDT", timeframe="1m")
    assert qs.count() == 66087
    assert qs.order_by("timestamp").values_list("timestamp", flat=True).first() == 1679004960000


@pytest.mark.django_db
def test_given_close_labelled_import_when_compared_to_open_labelled_then_shifted_by_one_timeframe(data_dir):
    _import(str(data_dir / BTC_5M), "--exchange", "a", "--symbol", "BTC/USDT", "--timeframe", "5m",
            "--time-label", "open")
    _import(str(data_dir / BTC_5M), "--exchange", "b", "--symbol", "BTC/USDT", "--timeframe", "5m",
            "--time-label", "close")
    a = Candle.objects.filter(exchange="a").order_by("timestamp").values_list("timestamp", flat=True).first()
    b = Candle.objects.filter(exchange="b").order_by("timestamp").values_list("timestamp", flat=True).first()
    assert (a, b) == (1679004900000 + 300_000, 1679004900000)


@pytest.mark.django_db
def test_given_file_with_bad_rows_when_imported_then_rows_rejected_by_name_and_rest_stored(data_dir, tmp_path):
    out = _import(str(_corrupted_copy(data_dir, tmp_path)), "--exchange", "binance", "--symbol", "BTC/USDT",
                  "--timeframe", "1m", "--time-label", "open")

    assert "received 50, stored 46 (46 new, 0 updated, 0 unchanged), rejected 4" in out
    for rule in ("[nan]", "[high_low]", "[negative_volume]", "[off_grid]"):
        assert rule in out
    assert "binance BTC/USDT 1m @ 1679005080000 (2023-03-16 22:18:00): rejected: non-finite value(s) high=nan" in out
    assert Candle.objects.count() == 46


def test_given_no_time_label_when_import_candles_called_then_clear_error_with_exit_2(data_dir):
    with pytest.raises(CommandError, match="--time-label open\\|close is required.*shift every candle") as exc:
        _import(str(data_dir / BTC_1M), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m")
    assert exc.value.returncode == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--exchange", "b", "--symbol", "S", "--timeframe", "2m", "--time-label", "open"), "unknown timeframe '2m'"),
        (("--exchange", "b", "--symbol", "S", "--timeframe", "1m", "--time-label", "start"), "--time-label must be"),
        (("--symbol", "S", "--timeframe", "1m", "--time-label", "open"), "--exchange is required"),
    ],
)
def test_given_bad_argument_when_import_candles_called_then_command_error_exit_2(data_dir, args, needle):
    with pytest.raises(CommandError, match=needle) as exc:
        _import(str(data_dir / BTC_1M), *args)
    assert exc.value.returncode == 2


def test_given_missing_time_label_when_run_as_process_then_one_line_on_stderr_and_exit_2(data_dir):
    proc = _manage("import_candles", str(data_dir / BTC_1M), "--exchange", "binance", "--symbol", "BTC/USDT",
                   "--timeframe", "1m", env=_test_db_env())
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--time-label open|close is required" in lines[0]


def test_given_non_numeric_field_when_run_as_process_then_error_names_file_line_field_and_exit_1(data_dir, tmp_path):
    with gzip.open(data_dir / BTC_1M, "rt") as fh:
        lines = [next(fh) for _ in range(6)]
    bad = lines[4].split(",")
    bad[3] = "abc"
    lines[4] = ",".join(bad)
    path = tmp_path / "bad.csv"
    path.write_text("".join(lines))

    proc = _manage("import_candles", str(path), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
                   "--time-label", "open", env=_test_db_env())

    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1
    assert str(path) in err[0] and "5" in err[0] and "low" in err[0] and "abc" in err[0]


def test_given_missing_file_when_run_as_process_then_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "nope.csv"
    proc = _manage("import_trades", str(missing), "--exchange", "kraken", "--symbol", "BTC/USDT", env=_test_db_env())
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.csv" in proc.stderr


@pytest.mark.django_db(transaction=True)
def test_given_real_file_when_imported_by_a_process_on_postgres_then_rows_visible_here(data_dir):
    proc = _manage("import_candles", str(data_dir / BTC_5M), "--exchange", "binance", "--symbol", "BTC/USDT",
                   "--timeframe", "5m", "--time-label", "open", env=_test_db_env())
    assert proc.returncode == 0, proc.stderr
    assert "received 13217, stored 13217 (13217 new" in proc.stdout
    assert Candle.objects.filter(timeframe="5m").count() == 13217


@pytest.mark.django_db
def test_given_real_trades_when_imported_twice_then_inserted_once(data_dir):
    out1, out2 = StringIO(), StringIO()
    args = (str(data_dir / KRAKEN_TRADES), "--exchange", "kraken", "--symbol", "BTC/USDT")
    call_command("import_trades", *args, stdout=out1)
    call_command("import_trades", *args, stdout=out2)
    assert "received 500, inserted 500, already stored 0, rejected 0" in out1.getvalue()
    assert "received 500, inserted 0, already stored 500, rejected 0" in out2.getvalue()
    assert RawTrade.objects.filter(exchange="kraken").count() == 500
    assert RawTrade.objects.get(trade_id="10218208").timestamp == 1762795433971


def test_given_embedded_default_when_migrate_and_import_then_sqlite_holds_the_candles(data_dir, tmp_path):
    env = _env(DJANGO_SETTINGS_MODULE="tradebot.settings.base", TRADEBOT_DATA_DIR=str(tmp_path / "var"))
    migrate = _manage("migrate", "--noinput", "-v", "0", env=env)
    assert migrate.returncode == 0, migrate.stderr
    args = ("import_candles", str(data_dir / BTC_5M), "--exchange", "binance", "--symbol", "BTC/USDT",
            "--timeframe", "5m", "--time-label", "open", "--publish")

    first = _manage(*args, env=env)
    second = _manage(*args, env=env)
    trades = _manage("import_trades", str(data_dir / KRAKEN_TRADES), "--exchange", "kraken", "--symbol", "BTC/USDT",
                     env=env)

    assert first.returncode == 0, first.stderr
    assert "stored 13217 (13217 new" in first.stdout
    assert "(0 new, 0 updated, 13217 unchanged)" in second.stdout
    assert trades.returncode == 0 and "inserted 500" in trades.stdout
    with sqlite3.connect(tmp_path / "var" / "tradebot.sqlite3") as db:
        assert db.execute("SELECT count(*), min(timestamp) FROM market_data").fetchone() == (13217, 1679005200000)
        assert db.execute("SELECT count(*) FROM market_datagap WHERE missing = 16").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM raw_trades").fetchone() == (500,)
