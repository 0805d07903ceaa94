"""Imports cannot damage stored candles by mistake: a file that does not fit --timeframe is refused with one line
saying what it looks like; changing stored candles needs --overwrite; an identical re-import is a silent no-op."""

from __future__ import annotations

from io import StringIO

import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.market.models import Candle

BTC_1H = "binance_spot_2023/binance_BTC_USDT-1h.csv"
BTC_15M = "binance_spot_2023/binance_BTC_USDT-15m.csv"


def _import(path, timeframe, *extra):
    out = StringIO()
    call_command("import_candles", str(path), "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe",
                 timeframe, "--time-label", "open", *extra, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_given_1h_file_when_imported_as_1m_then_refused_saying_rows_are_1h_apart(data_dir):
    with pytest.raises(CommandError, match=r"refused: rows are 1h apart, not --timeframe 1m") as err:
        _import(data_dir / BTC_1H, "1m")
    assert err.value.returncode == 2
    with pytest.raises(CommandError, match=r"refused: rows are 15m apart, not --timeframe 1h"):
        _import(data_dir / BTC_15M, "1h")
    assert not Candle.objects.exists()


@pytest.mark.django_db
def test_given_stored_candles_when_a_changed_file_is_imported_then_it_needs_overwrite(data_dir, tmp_path):
    first = _import(data_dir / BTC_1H, "1h")
    assert "719 new" in first
    assert "0 new, 0 updated, 719 unchanged" in _import(data_dir / BTC_1H, "1h")  # identical: silent no-op
    changed = pd.read_csv(data_dir / BTC_1H)
    changed.loc[[3, 10, 20], "close"] = changed.loc[[3, 10, 20], "open"]
    changed.loc[[3, 10, 20], "high"] = changed.loc[[3, 10, 20], ["high", "open"]].max(axis=1)
    changed.loc[[3, 10, 20], "low"] = changed.loc[[3, 10, 20], ["low", "open"]].min(axis=1)
    path = tmp_path / "changed-1h.csv"
    changed.to_csv(path, index=False)
    with pytest.raises(CommandError, match=r"refused: 3 stored candle\(s\) would change .*--overwrite") as err:
        _import(path, "1h")
    assert err.value.returncode == 2
    assert "3 updated" in _import(path, "1h", "--overwrite")
    stored = Candle.objects.get(timeframe="1h", timestamp=int(changed["timestamp"].iat[3]) + 3_600_000)
    assert stored.close == changed["close"].iat[3]
